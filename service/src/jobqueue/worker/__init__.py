"""The worker daemon: claims jobs and runs each in its own directory through a Runner."""
