"""Client functions: blob, timer and HTTP triggers that start or manage orchestrations."""
