"""The naive FastAPI model API: a pydantic request model and a sync endpoint, as tutorials write it."""

import os

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["BENCH_MODEL"])
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list[list[float]]


class PredictResponse(BaseModel):
    predictions: list[int]


@app.post("/predict", response_model=PredictResponse)
def predict(request: PredictRequest) -> PredictResponse:
    labels = model.predict(np.asarray(request.instances, dtype=np.float64))
    return PredictResponse(predictions=labels.tolist())
