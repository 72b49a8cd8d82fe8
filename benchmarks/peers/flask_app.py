"""The classic model API: Flask, a pickled model loaded at import, run by gunicorn (sync workers)."""

import os

import joblib
import numpy as np
from flask import Flask, jsonify, request

model = joblib.load(os.environ["BENCH_MODEL"])
app = Flask(__name__)


@app.post("/predict")
def predict():
    rows = request.get_json()["instances"]
    return jsonify(predictions=model.predict(np.asarray(rows, dtype=np.float64)).tolist())
