"""The inbound and outbound pipeline steps, as plain functions the activities call."""
