"""The baseline a TensorFlow user writes first: FastAPI calling the Keras model per request.

Models come from BENCH_KERAS_MODELS="name=path.keras,name=path.keras".
"""

import os

import keras
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
models = {
    name: keras.models.load_model(path)
    for name, path in (item.split("=", 1) for item in os.environ["BENCH_KERAS_MODELS"].split(","))
}


class PredictRequest(BaseModel):
    instances: list


@app.post("/predict/{name}")
def predict(name: str, request: PredictRequest) -> dict:
    x = np.asarray(request.instances, dtype=np.float32)
    return {"predictions": models[name].predict(x, verbose=0).tolist()}


@app.post("/call/{name}")
def call(name: str, request: PredictRequest) -> dict:
    x = np.asarray(request.instances, dtype=np.float32)
    return {"predictions": np.asarray(models[name](x, training=False)).tolist()}
