"""One command for BigCodeBench's evaluation environment.

    python -m codeblock.evaluate.bcb_env --python python3.10 --dest .venv-bcb [--dry-run]

creates a separate virtualenv for the ~70 third-party libraries BigCodeBench's tasks import, with
the exact pins of bigcodebench's `Requirements/requirements-eval.txt` (bigcode-project/bigcodebench
at commit 158327f, the list its official evaluation image installs) plus `bigcodebench==0.2.5`
without dependencies (its checker runs in the sandbox; `bigcodebench.eval` needs only numpy). The
pins (numpy 1.21, scipy 1.7, tensorflow 2.11) need Python 3.10; scikit-image 0.18.0 has no 3.10
wheel and is compiled (a C compiler is needed; it takes long). The project's own venv stays
untouched. Set `eval.bigcodebench_python` to the interpreter it prints: the sandbox's fork servers
then run BigCodeBench programs with it (docs/evaluation.md, "The evaluation environment").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BIGCODEBENCH_VERSION = "0.2.5"
# bigcodebench Requirements/requirements-eval.txt @ 158327f (duplicates dropped; `selenium==4.15.`
# there is read by pip as 4.15)
EVAL_PINS = """
beautifulsoup4==4.8.2 blake3==0.4.1 chardet==5.2.0 cryptography==38.0.0 datetime==5.5 Django==4.2.7
dnspython==2.6.1 docxtpl==0.11.5 Faker==20.1.0 flask_login==0.6.3 flask_restful==0.3.10 flask_wtf==1.2.1
Flask-Mail==0.9.1 flask==3.0.3 folium==0.16.0 gensim==4.3.2 geopandas==0.13.2 geopy==2.4.1 holidays==0.29
keras==2.11.0 Levenshtein==0.25.0 librosa==0.10.1 lxml==4.9.3 matplotlib==3.7.0 mechanize==0.4.9
natsort==7.1.1 networkx==2.6.3 nltk==3.8 numba==0.55.0 numpy==1.21.2 opencv-python-headless==4.9.0.80
openpyxl==3.1.2 pandas==2.0.3 Pillow==10.3.0 prettytable==3.10.0 psutil==5.9.5 pycryptodome==3.14.1
pyfakefs==5.4.1 pyquery==1.4.3 pytesseract==0.3.10 pytest==8.2.0 python_http_client==3.3.7
python-dateutil==2.9.0 python-docx==1.1.0 python-Levenshtein-wheels pytz==2023.3.post1 PyYAML==6.0.1
requests_mock==1.11.0 requests==2.31.0 rsa==4.9 scikit-image==0.18.0 scikit-learn==1.3.1 scipy==1.7.2
seaborn==0.13.2 selenium==4.15 sendgrid==6.11.0 shapely==2.0.4 soundfile==0.12.1 statsmodels==0.14.0
sympy==1.12 tensorflow==2.11.1 textblob==0.18.0 texttable==1.7.0 Werkzeug==3.0.1 wikipedia==1.4.0
wordcloud==1.9.3 wordninja==2.0.0 WTForms==3.1.2 xlrd==2.0.1 xlwt==1.3.0 xmltodict==0.13.0
""".split()


# NLTK corpora the tasks load (counted over the v0.1.4 tasks: stopwords in 21, punkt in 6, words,
# vader_lexicon, averaged_perceptron_tagger); into <venv>/nltk_data, on NLTK's default search path
# as sys.prefix/nltk_data, so the sandbox (which exposes the venv read-only) finds them. Without
# them, 11 ground truths fail with "Resource stopwords not found" (measured).
NLTK_DATA = ["stopwords", "punkt", "words", "vader_lexicon", "averaged_perceptron_tagger"]


def nltk_command(dest: Path) -> list[str]:
    return [str(dest / "bin" / "python"), "-m", "nltk.downloader", "-d", str(dest / "nltk_data"), *NLTK_DATA]


def commands(python: str, dest: Path) -> list[list[str]]:
    pip = [str(dest / "bin" / "python"), "-m", "pip", "install", "--no-input"]
    return [
        [python, "-m", "venv", str(dest)],
        [*pip, "--upgrade", "pip"],
        [*pip, *EVAL_PINS],
        [*pip, "--no-deps", f"bigcodebench=={BIGCODEBENCH_VERSION}"],
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="python3.10", help="interpreter for the venv (the pins need 3.10)")
    ap.add_argument("--dest", default=".venv-bcb", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args(argv)
    if args.dest.exists() and not args.dry_run:
        print(f"{args.dest} exists; remove it first or choose another --dest", file=sys.stderr)
        return 2
    for cmd in commands(args.python, args.dest):
        print("+", " ".join(cmd))
        if not args.dry_run:
            subprocess.run(cmd, check=True)
    cmd = nltk_command(args.dest)  # from NLTK's data server, not a package registry: may be unreachable
    print("+", " ".join(cmd))
    if not args.dry_run and subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:  # it asks to retry
        print(f"warning: NLTK data not downloaded; tasks using {', '.join(NLTK_DATA)} will fail their "
              f"ground truth. Rerun `{' '.join(cmd)}` where the NLTK data server is reachable.", file=sys.stderr)
    print(f"BigCodeBench evaluation interpreter: {args.dest.resolve() / 'bin' / 'python'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
