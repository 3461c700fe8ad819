from bpexp.cli import main

if __name__ == "__main__":  # guarded: the recorder process (spawn) imports this module again
    main()
