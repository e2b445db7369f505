"""Conversions to and from torch's formats (torch is optional and imported lazily)."""
