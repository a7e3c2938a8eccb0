"""How sure a figure is: bootstrap confidence intervals resampling the independent unit (docs/intervals.md)."""
