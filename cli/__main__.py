"""`python -m cli` runs the same command as the `uk-law` entry point."""
from cli.main import main

if __name__ == "__main__":
    main()
