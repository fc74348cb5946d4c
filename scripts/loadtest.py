"""Load-test the server on 127.0.0.1: `python scripts/loadtest.py ckpt_path=PATH [--requests 400 --clients 16]`
(see visionlab.tools.loadtest)."""

from visionlab.tools.loadtest import main

if __name__ == "__main__":
    main()
