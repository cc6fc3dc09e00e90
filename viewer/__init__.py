"""The live view: a local web page that shows a session (or a batch) as it builds up."""
