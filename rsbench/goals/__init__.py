"""Goals: what one attack on one sample is run and judged for, per goal (evasion, degradation, spoofing)."""
