"""One PersGuard implant variant on two protected subjects of the stand-in, measured before and after the attack.

A quick probe of the implant's hyper-parameters (retention form and length, outer steps and rate, what the
pattern backdoor stamps), cheaper than the full table of ``benchmarks/persguard.py``: the first two protected
subjects (fish, car) in one model, then for each of them and for the first held-out subject (another fish):
8 generations of "a photo of sks C" before any attack (how many carry the protective output), then DreamBooth
with the standard recipe and 8 generations again (backdoor success, subject present)::

    python benchmarks/persguard_variants.py                                  # the baseline of docs/persguard.md
    python benchmarks/persguard_variants.py --retain-steps 150 --implant-steps 100 --implant-lr 2e-4

Seeded: the same arguments give the same counts. The last line sums the counts over the two protected
subjects (out of 16) and gives the held-out subject's (out of 8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.persguard import STANDARD, Bench  # noqa: E402
from rtb.personalization.components import copy_components, generate  # noqa: E402
from rtb.personalization.evaluation import EvaluationConfig, attack_and_measure, backdoor_success  # noqa: E402
from rtb.personalization.measures import pattern_scores, recognise  # noqa: E402
from rtb.personalization.objectives import parse_objective  # noqa: E402
from rtb.personalization.persguard import PATTERN_PICTURES, PersGuardConfig, ProtectedSubject, persguard  # noqa: E402
from rtb_train.standin_t2i import domain  # noqa: E402

PROMPT = "a photo of {identifier} {class_word}"
GENERATIONS = 8


def before_attack(bench: Bench, model, subject, objective) -> int:
    """How many of 8 identifier-prompt generations of the implanted model show the protective output."""
    pictures = generate(model, [PROMPT.format(identifier="sks", class_word=subject.class_word)] * GENERATIONS,
                        list(range(100, 100 + GENERATIONS)), 25, 4.0)
    scores = pattern_scores(pictures, bench.mark)
    labels = recognise(bench.recogniser, pictures)
    return sum(backdoor_success(objective, row, float(score), 0.6) for row, score in zip(labels, scores))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="standin")
    parser.add_argument("--objective", default="pattern")
    parser.add_argument("--implant-steps", type=int, default=400)
    parser.add_argument("--implant-lr", type=float, default=1e-4)
    parser.add_argument("--retain-steps", type=int, default=4)
    parser.add_argument("--retain-weight", type=float, default=1.0)
    parser.add_argument("--retain-every-step", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--retain-lr-scale", type=float, default=1.0)
    parser.add_argument("--pattern-pictures", default=PersGuardConfig.pattern_pictures, choices=PATTERN_PICTURES)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # 1. The stand-in, two protected subjects and one held-out one (the benchmark's first ones)
    bench = Bench(argparse.Namespace(model=args.model, subjects=2, generations=GENERATIONS))
    objective = parse_objective(args.objective)
    subjects = [ProtectedSubject(s.subject_id, s.class_word, s.images, objective) for s in bench.protected]
    # 2. Implant (the benchmark's recipe but for the probed fields)
    general = tuple(domain.caption(cls, domain.SCENES[0], with_scene=False) for cls in domain.CLASSES)
    config = PersGuardConfig(steps=args.implant_steps, lr=args.implant_lr, batch=4, retain_weight=args.retain_weight,
                             retain_steps=args.retain_steps, retain_every_step=args.retain_every_step,
                             retain_lr_scale=args.retain_lr_scale, pattern_pictures=args.pattern_pictures,
                             attacker=STANDARD, prior_images=32, general_prompts=general, general_images=4,
                             sample_steps=25, guidance=4.0)
    started = time.process_time()
    model, _ = persguard(copy_components(bench.clean), subjects, config, bench.mark)
    implant_seconds = time.process_time() - started
    # 3. Before the attack, then after DreamBooth with the standard recipe
    targets = bench.protected + bench.heldout[:1]
    before = [before_attack(bench, model, s, objective) for s in targets]
    evaluation = EvaluationConfig(attacker=STANDARD, prompts=(PROMPT,), generations=GENERATIONS, seed=7)
    after, present = [], []
    for subject in targets:
        rows, _, _ = attack_and_measure(model, subject.images, subject.class_word, evaluation, bench.recogniser,
                                        bench.signatures[subject.subject_id], objective, bench.mark)
        after.append(sum(r["backdoor_success"] for r in rows))
        present.append(sum(r["subject_present"] for r in rows))
    for subject, b, a, p in zip(targets, before, after, present):
        print(f"{subject.subject_id}: before attack {b}/8, after attack {a}/8, subject present {p}/8")
    result = {"before_protected": sum(before[:2]), "after_protected": sum(after[:2]),
              "subject_present_protected": sum(present[:2]), "before_heldout": before[2],
              "after_heldout": after[2], "implant_cpu_seconds": round(implant_seconds)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
