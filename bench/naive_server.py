"""BASELINE, not our service: a reward server in the style of OpenRLHF's serve_rm, for comparison only.

FastAPI + eager PyTorch + transformers; each request is tokenised and run on its own inside the handler (no
cross-request batching, no length grouping), as serve_rm does. Same request/response shape as our /score.
Run: python -m bench.naive_server --model DIR --bundle BUNDLE --port P --threads T
"""

from __future__ import annotations

import argparse
from typing import Any


def build_app(model_dir: str, bundle_dir: str, threads: int) -> Any:
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForSequenceClassification

    from models.bundle import read_bundle
    from models.formatting import Formatter
    from models.inputs import pad

    torch.set_num_threads(threads)
    bundle = read_bundle(bundle_dir)
    # Same token ids as our service, so the comparison is about serving, not about text handling.
    formatter = Formatter.from_file(str(bundle.tokenizer_path), bundle.meta.formatting)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    app = FastAPI(title="naive serve_rm-style baseline")

    @app.post("/score")
    async def score(body: dict[str, Any]) -> dict[str, Any]:
        items = body["items"]
        encoded = formatter.encode_many([i["prompt"] for i in items], [i["completion"] for i in items])
        feeds = pad(encoded, bundle.meta.pad_token_id, ("input_ids", "attention_mask"))
        with torch.inference_mode():  # blocks the event loop, as serve_rm's handler does
            logits = model(**{name: torch.from_numpy(array) for name, array in feeds.items()}).logits
        return {"scores": logits[:, 0].tolist()}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face folder of the fine-tuned reward model.")
    parser.add_argument("--bundle", required=True, help="The bundle (for its tokenizer and formatting).")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    app = build_app(args.model, args.bundle, args.threads)
    # Its handler blocks the event loop for seconds under load, and uvloop runs a keep-alive timer that expired
    # meanwhile before it reads the next request already waiting on that connection: with uvicorn's 5 s default
    # the server would close connections under the load generator. A harness setting, not a serving advantage.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_keep_alive=600)


if __name__ == "__main__":
    main()
