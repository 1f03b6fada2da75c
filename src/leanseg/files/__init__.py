"""What leanseg writes to disk, and the rules every write follows.

``atomic``: every file appears whole or not at all (temporary file, then rename); ``checkpoint``:
checkpoint files written atomically and read with their sizes checked first; ``folder_lock``: one
writer per folder; ``run_dir``: the run folder ``leanseg train`` writes and the guards around
reusing one; ``outputs``: where a command may write its output file (never over what leanseg did
not write).
"""
