#!/usr/bin/env python
"""Train, deploy, query and remove the Factorization Machines model: the user entry point.

``train | deploy | predict | undeploy | evaluate | recommend | import-model | score`` on one
of two backends, ``local`` (default) or ``sagemaker``. The commands live in
:mod:`fmprep.cli_model` and are also ``fmprep`` subcommands (``python -m fmprep train …``);
this script runs them under its own name, as the Makefile calls them.

Errors a user can fix print one line, ``train_deploy: error: …``, and exit with status 2.
"""

from __future__ import annotations

import datetime as dt  # noqa: F401  (tests build dates as train_deploy.dt.date)

from fmprep import cli_model
from fmprep.cli_model import COMMANDS, hyperparameters  # noqa: F401  (re-exported)
from fmprep.serving.local import deploy_local, undeploy_local  # noqa: F401  (re-exported)
from fmprep.serving.predict import default_date, fm_row, rating_text  # noqa: F401  (re-exported)

PROG = "train_deploy"
EPILOG = """examples:
  # local backend: train on data/output, serve it, ask for one rating, stop the server
  python scripts/train_deploy.py train --epochs 3 --num-factors 64
  python scripts/train_deploy.py deploy --port 8080
  python scripts/train_deploy.py predict --customer 10001 --product B00ABC1234 --date 2015-08-31
  python scripts/train_deploy.py undeploy

  # SageMaker: OUTPUT must be on S3 (make data OUTPUT=s3://…)
  python scripts/train_deploy.py train --backend sagemaker --output s3://my-bucket/fm \\
      --role arn:aws:iam::123456789012:role/SageMakerRole --hp linear_lr=0.01
  python scripts/train_deploy.py deploy --backend sagemaker --output s3://my-bucket/fm \\
      --role arn:aws:iam::123456789012:role/SageMakerRole
  python scripts/train_deploy.py predict --backend sagemaker --output s3://my-bucket/fm \\
      --customer 10001 --product B00ABC1234
  python scripts/train_deploy.py undeploy --backend sagemaker --output s3://my-bucket/fm
"""


def build_parser():
    """The argument parser of ``scripts/train_deploy.py`` (:func:`fmprep.cli_model.build_parser`).

    Returns
    -------
    argparse.ArgumentParser
        Its errors are one line naming the make variable and a fix.
    """
    return cli_model.build_parser(PROG, EPILOG, example_prog="train_deploy.py")


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line and return 2.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0, 2 after a ``train_deploy: error: …`` line, 130 when interrupted.
    """
    return cli_model.main(argv, PROG, EPILOG, example_prog="train_deploy.py")


if __name__ == "__main__":
    raise SystemExit(main())
