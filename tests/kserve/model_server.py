"""One model server for an iris model, in the place of one InferenceService's predictor.

    python model_server.py --model_name=NAME --model_dir=DIR --http_port=PORT [ISVC ARGS ...]

KServe's sklearn runtime (the kserve-sklearnserver image) is not published as a Python package, so
this is KServe's own Python ModelServer (the `kserve` package) with a scikit-learn model, serving
it as the runtime does (python/sklearnserver/sklearnserver/model.py and __main__.py in
github.com/kserve/kserve, unchanged from v0.16.0 to v0.20.0):

- its command line is the runtime's (config/runtimes/kserve-sklearnserver.yaml: --model_name,
  --model_dir, --http_port), with the InferenceService's args after it, as KServe appends them
  (MergeRuntimeContainers, pkg/controller/v1beta1/inferenceservice/utils/utils.go): the last
  --model_name wins;
- the model directory (where the storage initializer puts storageUri) holds exactly one model file
  ending in .joblib, .pkl or .pickle, loaded with joblib; none or several and it does not start;
- the V1 protocol for that model name (POST /v1/models/NAME:predict, {"instances": [...]} ->
  {"predictions": [...]}), through the kserve package's own request and response helpers, and no
  response headers of its own.

One difference: gRPC is off (--enable_grpc=false, from servers.py), so that two servers can run
side by side on one machine; the runtime serves gRPC on port 8081 of its own pod.
"""
import argparse
import os

import joblib
import kserve
from kserve.errors import InferenceError, ModelMissingError
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_FILE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def model_file(model_dir: str) -> str:
    """The one model file in model_dir."""
    found = sorted(name for name in os.listdir(model_dir)
                   if name.endswith(MODEL_FILE_SUFFIXES) and os.path.isfile(os.path.join(model_dir, name)))
    if not found:
        raise ModelMissingError(model_dir)
    if len(found) > 1:
        raise RuntimeError(f"{model_dir} holds {len(found)} model files, the runtime allows one: {found}")
    return os.path.join(model_dir, found[0])


class SklearnModel(kserve.Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir

    def load(self) -> bool:
        self.model = joblib.load(model_file(self.model_dir))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        try:
            return get_predict_response(payload, self.model.predict(get_predict_input(payload)), self.name)
        except Exception as e:  # the runtime answers every failure with InferenceError, a 500
            raise InferenceError(str(e))


def main():
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SklearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
