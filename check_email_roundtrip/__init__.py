"""check_email_roundtrip: a Nagios/Icinga plugin that proves email arrives."""

__version__ = "0.1.0"
