"""Prop-firm kernel contracts: the rule API integrators write custom rules against."""
