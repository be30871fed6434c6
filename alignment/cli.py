"""`guardchat align STAGE --recipe FILE`: run one stage of an alignment recipe, or `run` for all."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from alignment.stages import STAGES


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="guardchat align", description="SFT -> reward model -> PPO (and DPO) from one YAML recipe. "
        "Each stage writes a folder under the recipe's out_dir; finished stages are skipped, an interrupted "
        "one resumes from its last checkpoint.")
    parser.add_argument("stage", choices=[*STAGES, "run"], help="a stage, or `run` for the recipe's stages in order")
    parser.add_argument("--recipe", default="smollm2_cpu",
                        help="recipe YAML file, or the name of one in alignment/recipes (default: smollm2_cpu)")
    parser.add_argument("--out", type=Path, help="override the recipe's out_dir")
    parser.add_argument("--force", action="store_true", help="run the stage(s) again even if done")
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from alignment.recipe import Recipe
    from alignment.stages import Pipeline

    try:
        recipe = Recipe.load(Path(args.recipe))
    except FileNotFoundError:
        print(f"guardchat align: no recipe {args.recipe!r}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"guardchat align: invalid recipe {args.recipe}:\n{exc}", file=sys.stderr)
        return 2
    if args.out:
        recipe.out_dir = args.out
    pipeline = Pipeline(recipe)
    if args.stage == "run":
        pipeline.run(force=args.force)
    else:
        pipeline.stage(args.stage, force=args.force)
    return 0
