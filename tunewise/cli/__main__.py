"""`python -m tunewise.cli ...`: how torchrun and accelerate launch start a command on every rank."""

from tunewise.cli import app

if __name__ == "__main__":
    app()
