"""`python -m ringkv`: the same command line as the `ringkv` console script."""

from ringkv.tools.cli import main

if __name__ == "__main__":
    main(prog_name="ringkv")
