"""``python -m processfork ...``: the CLI (``python -m processfork serve --help``)."""
from processfork._cli import main

if __name__ == "__main__":
    main()
