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

from benchmarks.persguard import STANDARD, Bench, implant_config  # noqa: E402
from rtb.personalization.components import copy_components, generate  # noqa: E402
from rtb.personalization.evaluation import EvaluationConfig, attack_and_measure, measure_generations  # noqa: E402
from rtb.personalization.objectives import parse_objective  # noqa: E402
from rtb.personalization.persguard import PATTERN_PICTURES, PersGuardConfig, ProtectedSubject, persguard  # noqa: E402

PROMPT = "a photo of {identifier} {class_word}"
GENERATIONS = 8


def before_attack(bench: Bench, model, subject, objective, evaluation: EvaluationConfig) -> int:
    """How many of 8 identifier-prompt generations of the implanted model show the protective output."""
    prompts = [PROMPT.format(identifier="sks", class_word=subject.class_word)] * GENERATIONS
    seeds = list(range(100, 100 + GENERATIONS))
    pictures = generate(model, prompts, seeds, evaluation.sample_steps, evaluation.guidance)
    rows = measure_generations(pictures, prompts, seeds, bench.recogniser, bench.signatures[subject.subject_id],
                               objective, bench.mark, evaluation.pattern_threshold)
    return sum(r["backdoor_success"] for r in rows)


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
    parser.add_argument("--prior-images", type=int, default=32, help="teacher class pictures per protected class")
    parser.add_argument("--pattern-pictures", default=PersGuardConfig.pattern_pictures, choices=PATTERN_PICTURES)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # 1. The stand-in, two protected subjects and one held-out one (the benchmark's first ones)
    bench = Bench(argparse.Namespace(model=args.model, subjects=2, generations=GENERATIONS))
    objective = parse_objective(args.objective)
    subjects = [ProtectedSubject(s.subject_id, s.class_word, s.images, objective) for s in bench.protected]
    # 2. Implant (the benchmark's recipe but for the probed fields)
    config = implant_config(args, "white-box", args.retain_weight, args.pattern_pictures)
    started = time.process_time()
    model, _ = persguard(copy_components(bench.clean), subjects, config, bench.mark)
    implant_seconds = time.process_time() - started
    # 3. Before the attack, then after DreamBooth with the standard recipe
    targets = bench.protected + bench.heldout[:1]
    evaluation = EvaluationConfig(attacker=STANDARD, prompts=(PROMPT,), generations=GENERATIONS, seed=7)
    before = [before_attack(bench, model, s, objective, evaluation) for s in targets]
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
