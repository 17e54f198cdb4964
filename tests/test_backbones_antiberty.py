"""AntiBERTy: real pretrained weights from the antiberty wheel, loaded with plain transformers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import BertForMaskedLM

from plm_bench import plugins
from plm_bench.files import registry
from plm_bench.models.backbone import load_backbone
from plm_bench_plugins.transformer_family import packaged_checkpoint

pytest.importorskip("antiberty", reason="install the test extra: pip install -e '.[test]' (pulls in antiberty)")

# Variable domains of therapeutic antibodies with public structures (sequences as deposited):
# trastuzumab (PDB 1N8Z), pembrolizumab (5DK3), adalimumab (3WD5); heavy (VH) and light (VL).
CHAINS = [
    "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSRWGGDGFYAMDYWGQGTLVTVSS",
    "DIQMTQSPSSLSASVGDRVTITCRASQDVNTAVAWYQQKPGKAPKLLIYSASFLYSGVPSRFSGSRSGTDFTLTISSLQPEDFATYYCQQHYTTPPTFGQGTKVEIK",
    "QVQLVQSGVEVKKPGASVKVSCKASGYTFTNYYMYWVRQAPGQGLEWMGGINPSNGGTNFNEKFKNRVTLTTDSSTTTAYMELKSLQFDDTAVYYCARRDYRFDMGFDYWGQGTTVTVSS",
    "EIVLTQSPATLSLSPGERATLSCRASKGVSTSGYSYLHWYQQKPGQAPRLLIYLASYLESGVPARFSGSGSGTDFTLTISSLEPEDFAVYYCQHSRDLPLTFGGGTKVEIK",
    "EVQLVESGGGLVQPGRSLRLSCAASGFTFDDYAMHWVRQAPGKGLEWVSAITWNSGHIDYADSVEGRFTISRDNAKNSLYLQMNSLRAEDTAVYYCAKVSYLSTASSLDYWGQGTLVTVSS",
    "DIQMTQSPSSLSASVGDRVTITCRASQGIRNYLAWYQQKPGKAPKLLIYAASTLQSGVPSRFSGSGSGTDFTLTISSLQPEDVATYYCQRYNRAPYTFGQGTKVEIK",
]


@pytest.fixture(scope="module")
def antiberty():
    return load_backbone(plugins.get("backbone", "antiberty"), None, "cpu").eval()


def test_masked_residues_are_recovered_far_above_the_most_frequent_residue(antiberty):
    """The wheel's weights are really pretrained: its masked-LM head, loaded as a plain
    BertForMaskedLM, fills in every 7th residue of antibody chains it must predict from context."""
    folder, _ = packaged_checkpoint(plugins.get("backbone", "antiberty"), registry()["backbones"]["antiberty"])
    mlm = BertForMaskedLM.from_pretrained(folder).eval()
    vocabulary = antiberty.vocabulary
    mask_id = 4  # [MASK] in AntiBERTy's vocab.txt
    inputs = vocabulary.encode(CHAINS)
    masked = inputs["input_ids"].clone()
    positions = torch.zeros_like(masked, dtype=torch.bool)
    for row, chain in enumerate(CHAINS):
        positions[row, 1 + torch.arange(3, len(chain), 7)] = True  # +1: after [CLS]
    masked[positions] = mask_id
    with torch.no_grad():
        logits = mlm(input_ids=masked, attention_mask=inputs["attention_mask"]).logits
    logits[..., :5] = float("-inf")  # special tokens are never the answer
    truth = inputs["input_ids"][positions]
    accuracy = (logits[positions].argmax(-1) == truth).float().mean().item()
    most_frequent = Counter(truth.tolist()).most_common(1)[0][1] / len(truth)
    assert len(truth) > 90
    assert most_frequent < 0.2
    assert accuracy > 0.6 and accuracy > 4 * most_frequent, (accuracy, most_frequent)


def test_embeds_antibodies_residue_by_residue(antiberty):
    assert antiberty.max_length == 510 and antiberty.hidden_size == 512
    with torch.no_grad():
        residues = antiberty.embed(CHAINS[:2])
        alone = antiberty.embed(CHAINS[1:2]).hidden[0]
    assert residues.hidden.shape == (2, len(CHAINS[0]), 512)
    assert residues.mask.sum(1).tolist() == [len(c) for c in CHAINS[:2]]
    torch.testing.assert_close(residues.hidden[1, : len(CHAINS[1])], alone, atol=1e-5, rtol=1e-4)
