"""``python -m processfork.sglang <sglang server args>`` (see ``_launch.py``)."""
from processfork.sglang._launch import main

if __name__ == "__main__":
    main()
