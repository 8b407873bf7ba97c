"""The sandbox side of the executor: modules that run inside the fork server and the program's
process. `sbx_server.py` is started as a script (`python -I sbx_server.py`) and imports its
siblings by their `sbx_` names; none of them imports `codeblock`, so a program under test sees
nothing of the pipeline. Only `sbx_proctree` is also imported by the pipeline-side executor."""
