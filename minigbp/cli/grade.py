"""``minigbp grade FILE.py``: grade a student's layer functions property by property
(:mod:`minigbp.course.grade`), print the points table, optionally write Gradescope's results.json."""

from ..course.cases import CONDITIONS
from ..course.rules import RULES
from .inputs import positive

__all__ = ["add_grade_parser"]


def add_grade_parser(subparsers):
    """Add ``minigbp grade FILE.py [--conditions ...] [--rules ...] [--json OUT]`` to a CLI."""
    p = subparsers.add_parser(
        "grade",
        help="grade a student's layer functions (CS231n's or minigbp's names), one point per property",
        description="Import FILE.py, find its layer functions by CS231n's names (conv_forward_naive, "
                    "max_pool_backward_naive, relu_backward, affine_forward, the *_fast variants, ...) or by "
                    "minigbp.ops' names (conv2d_forward, maxpool2d_backward_naive, ...), check each property "
                    "(shape, values, ties, padding, stride, in-place, dtype, ...) against minigbp on "
                    "derandomized hypothesis examples, and print one point per property. Failures come with "
                    "the smallest case, why the expected value is right, hints and a reproduction. Exit "
                    "status: 0 when every property passed, 1 when some failed, 2 on usage errors.",
    )
    p.add_argument("file", metavar="FILE.py", help="the student's Python file")
    p.add_argument("--conditions", choices=list(CONDITIONS), default="pytorch",
                   help="which shapes are drawn: every shape PyTorch accepts (default), or only those "
                        "CS231n's docstrings let students assume (exact tiling, pooling without padding)")
    p.add_argument("--rules", choices=list(RULES), default="pytorch",
                   help="which answers are accepted at tied maxima and at a ReLU's x == 0: PyTorch's choice "
                        "(default), or any subgradient")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="also write Gradescope's results.json (score, and one test per function and property)")
    p.add_argument("--max-examples", type=positive, default=100, metavar="N",
                   help="examples per property (default: 100)")
    p.add_argument("--time-limit", type=positive, default=60, metavar="SECONDS",
                   help="time allowed per property before it scores zero (default: 60)")
    p.set_defaults(run=_run_grade)
    return p


def _run_grade(args):
    from ..course import grade

    settings_text = f"conditions: {args.conditions}, rules: {args.rules}"
    try:
        module = grade.load_file(args.file)
    except grade.StudentFileError as e:  # the file raised on import: it scores zero, with its error
        print(e)
        if args.json:
            grade.write_json(args.json, [], str(e))
        return 1
    outcomes = grade.grade_module(module, conditions=args.conditions, rules=args.rules,
                                  max_examples=args.max_examples, time_limit=args.time_limit)
    if not outcomes:
        raise ValueError(f"{args.file}: no layer functions found; expected CS231n's names (conv_forward_naive, "
                         "max_pool_backward_naive, relu_forward, affine_backward, ...) or minigbp.ops' "
                         "(conv2d_forward, maxpool2d_backward, relu_backward, linear_forward, ...)")
    print(f"minigbp grade {args.file} ({settings_text})\n")
    print(grade.table(outcomes))
    failed = [o for o in outcomes if not o.passed]
    for o in failed:
        print("\n" + "=" * 100 + "\n" + o.message)
    if args.json:
        grade.write_json(args.json, outcomes, settings_text)
    return 1 if failed else 0
