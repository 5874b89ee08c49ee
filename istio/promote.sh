#!/bin/sh
# Promotes the canary of istio/ once the rollout has it at 100 % (README, "Canary rollout on
# Istio + KServe", step 4), with kubectl:
#   1. checks that the WasmPlugin's route is the one named here and its canary_weight is 100;
#   2. sets sklearn-primary's storageUri to sklearn-canary's;
#   3. waits until KServe has carried the new storageUri into the primary's Deployment, then
#      until that Deployment has rolled out (`kubectl rollout status`): the InferenceService is
#      Ready as soon as its Deployment is Available, which is also true mid-rollout;
#   4. sets canary_weight back to 0 with the same `kubectl patch` as `canary-split rollout
#      --kubectl` (the patch first tests the route's host).
# Until step 4, users not pinned stay on the canary, which serves the new model; requests pinned
# to primary (and its own host) reach old and new primary pods alike while it rolls out.
# If the rollout fails or times out, it stops with the weight left at 100.
#
# Names can be changed through the environment; KServe 0.16 to 0.20.
set -eu

NAMESPACE=${NAMESPACE:-models}
PRIMARY=${PRIMARY:-sklearn-primary}
CANARY=${CANARY:-sklearn-canary}
PLUGIN=${PLUGIN:-canary-split}
PLUGIN_NAMESPACE=${PLUGIN_NAMESPACE:-istio-system}
HOST=${HOST:-sklearn-predictor-models.example.com}
ROUTE=${ROUTE:-0}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-15m}
RECONCILE_POLLS=${RECONCILE_POLLS:-60}
POLL_SECONDS=${POLL_SECONDS:-2}

fail() {
    echo "promote: $*" >&2
    exit 1
}

# KServe's predictor Deployment for an InferenceService, and the pod-template annotation that
# carries its storageUri (constants.PredictorServiceName and
# constants.StorageInitializerSourceUriInternalAnnotationKey in pkg/constants/constants.go;
# Predictor.addStorageInitializerAnnotations in
# pkg/controller/v1beta1/inferenceservice/components/predictor.go; createRawDefaultDeployment
# copies the annotations into the pod template).
DEPLOYMENT=$PRIMARY-predictor
SOURCE_URI='{.spec.template.metadata.annotations.internal\.serving\.kserve\.io/storage-initializer-sourceuri}'
ROUTE_PATH=/spec/pluginConfig/routes/$ROUTE

route_host=$(kubectl get wasmplugin "$PLUGIN" --namespace "$PLUGIN_NAMESPACE" -o "jsonpath={.spec.pluginConfig.routes[$ROUTE].host}")
[ "$route_host" = "$HOST" ] || fail "WasmPlugin $PLUGIN_NAMESPACE/$PLUGIN route $ROUTE is for '$route_host', not $HOST"
weight=$(kubectl get wasmplugin "$PLUGIN" --namespace "$PLUGIN_NAMESPACE" -o "jsonpath={.spec.pluginConfig.routes[$ROUTE].canary_weight}")
[ "$weight" = 100 ] || fail "canary_weight is '$weight', not 100: promote once the rollout has the canary at 100 %"

uri=$(kubectl get inferenceservice "$CANARY" --namespace "$NAMESPACE" -o "jsonpath={.spec.predictor.model.storageUri}")
[ -n "$uri" ] || fail "InferenceService $NAMESPACE/$CANARY has no spec.predictor.model.storageUri"
case $uri in *'"'* | *'\'*) fail "storageUri $uri: a quote or backslash is not supported here" ;; esac

echo "promote: $NAMESPACE/$PRIMARY storageUri -> $uri"
kubectl patch inferenceservice "$PRIMARY" --namespace "$NAMESPACE" --type=json \
    -p "[{\"op\":\"replace\",\"path\":\"/spec/predictor/model/storageUri\",\"value\":\"$uri\"}]"

polls=0
until [ "$(kubectl get deployment "$DEPLOYMENT" --namespace "$NAMESPACE" -o "jsonpath=$SOURCE_URI")" = "$uri" ]; do
    polls=$((polls + 1))
    [ "$polls" -lt "$RECONCILE_POLLS" ] || fail "KServe has not put $uri into deployment/$DEPLOYMENT; canary_weight left at 100"
    sleep "$POLL_SECONDS"
done

kubectl rollout status "deployment/$DEPLOYMENT" --namespace "$NAMESPACE" --timeout "$ROLLOUT_TIMEOUT" ||
    fail "deployment/$DEPLOYMENT did not roll out; canary_weight left at 100 (users stay on the canary)"

echo "promote: $NAMESPACE/$PRIMARY serves $uri; canary_weight -> 0"
kubectl patch wasmplugin "$PLUGIN" --namespace "$PLUGIN_NAMESPACE" --type=json \
    -p "[{\"op\":\"test\",\"path\":\"$ROUTE_PATH/host\",\"value\":\"$HOST\"},{\"op\":\"replace\",\"path\":\"$ROUTE_PATH/canary_weight\",\"value\":0}]"
