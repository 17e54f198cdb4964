"""The residue alphabet every part of plm-bench accepts, and the one check of a sequence.

Sequences hold the 20 standard amino acids, X (unknown) and the rare codes U (selenocysteine),
O (pyrrolysine), B (D or N) and Z (E or Q). Rare codes are kept verbatim; each backbone family
maps them as its vocabulary needs (ProtT5 and one-hot: to X; ESM2 has tokens for them). Anything
else, lowercase included, is an error: nothing is rewritten. Torch-free.
"""

from __future__ import annotations

import re

from plm_bench.errors import BenchError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
UNKNOWN = "X"
RARE_RESIDUES = "UZOB"  # selenocysteine, Glx, pyrrolysine, Asx: ProtTrans models saw them as X
ACCEPTED = AMINO_ACIDS + UNKNOWN + RARE_RESIDUES
_OUTSIDE = re.compile(f"[^{ACCEPTED}]")


def check_sequence(sequence: str, where: str) -> str:
    """``sequence`` if it is a non-empty string over :data:`ACCEPTED`; else one line naming ``where``."""
    if not sequence:
        raise BenchError(f"{where}: the sequence is empty; remove the record or add its sequence")
    bad = _OUTSIDE.search(sequence)
    if bad:
        raise BenchError(f"{where}: the sequence has {bad.group()!r} at position {bad.start() + 1}; only "
                         f"uppercase amino-acid letters {AMINO_ACIDS}, {UNKNOWN} and {RARE_RESIDUES} are accepted")
    return sequence
