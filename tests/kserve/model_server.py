"""One KServe model server for an iris model: plays one InferenceService predictor.

    python model_server.py --model-dir DIR --http-port PORT --variant primary|canary

Serves the V1 protocol for the model "sklearn" (POST /v1/models/sklearn:predict,
{"instances": [[4 floats], ...]} -> {"predictions": [class, ...]}) and tags each
answer with the header x-model-variant. REST only: gRPC is off so that two servers
can run side by side.
"""
import argparse
import os

import joblib
import kserve
import numpy as np
from kserve.errors import InvalidInput

MODEL_NAME = "sklearn"


class SklearnModel(kserve.Model):
    def __init__(self, model_dir, variant):
        # return_response_headers=True makes kserve hand predict() a dict of response headers.
        super().__init__(MODEL_NAME, return_response_headers=True)
        self.model_dir = model_dir
        self.variant = variant
        self.load()

    def load(self):
        self.model = joblib.load(os.path.join(self.model_dir, "model.joblib"))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):
        # kserve passes the raw bytes on when Content-Type is not JSON (curl -d sends a form type).
        if not isinstance(payload, dict):
            raise InvalidInput("expected a JSON body with Content-Type: application/json")
        try:
            instances = np.asarray(payload["instances"], dtype=float)
            predictions = self.model.predict(instances)
        except (KeyError, TypeError, ValueError) as e:
            # A bad request is the client's fault: 400, not kserve's default 500.
            raise InvalidInput(f"expected {{\"instances\": [[4 floats], ...]}}: {e}")
        response_headers["x-model-variant"] = self.variant
        return {"predictions": predictions.tolist()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--variant", choices=["primary", "canary"], required=True)
    # Other flags are left to kserve, which reads sys.argv itself at import (e.g. --configure_logging false).
    args, _ = parser.parse_known_args()
    model = SklearnModel(args.model_dir, args.variant)
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
