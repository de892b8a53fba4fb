"""``python -m medseg`` (also what ``torchrun -m medseg train ...`` runs)."""

from medseg.cli import main

if __name__ == "__main__":
    main()
