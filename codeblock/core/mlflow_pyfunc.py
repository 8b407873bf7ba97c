"""MLflow "model from code" for a saved model folder (LoRA adapter, merged or full model).

`codeblock.core.tracking.log_model_dir` logs this file together with the folder (as the artifact
`model_dir`), so `mlflow.pyfunc.load_model("models:/<name>@candidate")` gives a model whose
`predict(["instruction", ...])` returns greedy completions. It needs only transformers (and peft
for an adapter). An adapter's base model is read from its adapter_config.json
(`base_model_name_or_path`: a hub id, or a local folder that must exist where it is loaded).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


class SavedCausalLM(PythonModel):
    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(context.artifacts["model_dir"])
        self.tokenizer = AutoTokenizer.from_pretrained(path, clean_up_tokenization_spaces=False)
        adapter = path / "adapter_config.json"
        if adapter.exists():
            from peft import PeftModel

            base = json.loads(adapter.read_text())["base_model_name_or_path"]
            self.model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        import torch

        max_new = int((params or {}).get("max_new_tokens", 256))
        out = []
        for instruction in model_input:
            if self.tokenizer.chat_template:
                ids = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": instruction}], add_generation_prompt=True, return_tensors="pt",
                    return_dict=True,
                )["input_ids"]
            else:
                ids = self.tokenizer(instruction + "\n\n", return_tensors="pt")["input_ids"]
            with torch.no_grad():
                gen = self.model.generate(ids, max_new_tokens=max_new, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
            out.append(self.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        return out


mlflow.models.set_model(SavedCausalLM())
