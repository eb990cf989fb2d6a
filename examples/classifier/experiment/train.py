"""Train a small classifier on the spirals benchmark and write results.json.

    python3 train.py                 # reads params.json, writes results.json

The model is deliberately small and written in plain Python (standard library
only) so that every line can be read and changed:

    input x (2 informative + irrelevant coordinates, standardised)
      -> feature map phi(x)       "raw" | "poly2" | "rff"      (fixed, not learned)
      -> hidden layer (optional)  h = act(W1 phi + b1)         hidden_units > 0
      -> softmax output           p = softmax(W2 h + b2)       (h = phi if no hidden layer)

trained by mini-batch SGD with momentum on the cross-entropy loss plus an L2
penalty on the weights (not the biases).  With hidden_units = 0 and
features = "raw" this is plain multinomial logistic regression, which cannot
separate spirals; curved boundaries need a hidden layer or a non-linear
feature map (or both).

Determinism: all randomness (initial weights, random Fourier features, the
order of examples in each epoch) comes from one random.Random(seed).  The
data set itself is fixed (see data.py).  Same params.json -> the same
results.json, except for the wall-clock "seconds" field.

Errors: a bad params.json (missing or unknown key, wrong type, value out of
range) makes the script exit with status 2 and a message naming the key on
stderr.  A numeric blow-up during training (loss becomes inf/NaN) is NOT an
error.  (The cross-entropy gradient is bounded, so a large learning rate alone
rarely does it; learning_rate * l2 > 2 does, because each step then overshoots
the weight decay.  Inside the thalamus.lua search space it should not happen.)
Training stops, results.json is written with "diverged": true, and the model
is scored as it stands -- any prediction from non-finite outputs counts as
wrong, so a diverged run usually scores accuracy 0.0 and is never mistaken for
a good one.
"""

import json
import math
import random
import sys
import time
from operator import add, mul

sys.dont_write_bytecode = True  # keep the experiment folder free of __pycache__
import data  # noqa: E402  (the fixed benchmark, see data.py)

# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

# name -> (type, check, description).  `check` returns True for valid values.
# These are sanity limits; the search space in thalamus.lua is narrower.
PARAM_SPEC = {
    "seed": (int, lambda v: v >= 0,
             "random seed for weights, features and shuffling (>= 0)"),
    "features": (str, lambda v: v in ("raw", "poly2", "rff"),
                 'feature map: "raw", "poly2" or "rff"'),
    "rff_dim": (int, lambda v: 1 <= v <= 1024,
                'number of random Fourier features, 1..1024 (used by features = "rff")'),
    "rff_scale": (float, lambda v: 0.0 < v <= 100.0,
                  "std-dev of the random Fourier frequencies (inverse kernel width), in (0, 100]"),
    "hidden_units": (int, lambda v: 0 <= v <= 512,
                     "hidden layer width, 0..512 (0 = no hidden layer)"),
    "activation": (str, lambda v: v in ("tanh", "relu"),
                   'hidden activation: "tanh" or "relu"'),
    "learning_rate": (float, lambda v: 0.0 < v <= 100.0,
                      "SGD step size, in (0, 100]"),
    "momentum": (float, lambda v: 0.0 <= v < 1.0,
                 "SGD momentum, in [0, 1)"),
    "batch_size": (int, lambda v: 1 <= v <= data.N_TRAIN,
                   "examples per SGD step, 1..%d" % data.N_TRAIN),
    "epochs": (int, lambda v: 1 <= v <= 10000,
               "passes over the training set, 1..10000"),
    "l2": (float, lambda v: 0.0 <= v <= 10.0,
           "L2 penalty on the weights, in [0, 10]"),
}


TYPE_NAMES = {int: "an integer", float: "a number", str: "a string"}


def fail(message):
    """Report a configuration error on stderr and exit non-zero."""
    print("train.py: error: " + message, file=sys.stderr)
    sys.exit(2)


def load_params(path):
    """Read and validate params.json; returns a dict with every key of PARAM_SPEC."""
    try:
        with open(path) as f:
            params = json.load(f)
    except OSError as e:
        fail("cannot read %s: %s" % (path, e.strerror))
    except json.JSONDecodeError as e:
        fail("%s is not valid JSON: %s" % (path, e))
    if not isinstance(params, dict):
        fail("%s must hold a JSON object" % path)

    for key in params:
        if key not in PARAM_SPEC:
            known = ", ".join(sorted(PARAM_SPEC))
            fail("unknown parameter %r in %s (known: %s)" % (key, path, known))
    for key, (kind, check, description) in PARAM_SPEC.items():
        if key not in params:
            fail("missing parameter %r in %s: %s" % (key, path, description))
        value = params[key]
        # JSON true/false are Python bools, which are also ints: reject them.
        # An integral JSON number (e.g. 1) is accepted where a float is expected.
        ok_type = not isinstance(value, bool) and (
            isinstance(value, kind) or (kind is float and isinstance(value, int))
        )
        if not ok_type:
            fail("parameter %r must be %s, got %s" % (key, TYPE_NAMES[kind], json.dumps(value)))
        if kind is float:
            value = params[key] = float(value)
            if not math.isfinite(value):
                fail("parameter %r must be finite, got %r" % (key, value))
        if not check(value):
            fail("invalid value %s for parameter %r; expected %s"
                 % (json.dumps(value), key, description))
    return params


# ---------------------------------------------------------------------------
# Vector helpers (a matrix is a list of rows)
# ---------------------------------------------------------------------------

def dot(u, v):
    return sum(map(mul, u, v))


def transpose(rows):
    return list(zip(*rows))


# ---------------------------------------------------------------------------
# Feature maps (computed once, before training)
# ---------------------------------------------------------------------------

def standardise(x_train, x_test):
    """Shift and scale every coordinate to mean 0, std 1 using training statistics."""
    d = len(x_train[0])
    n = len(x_train)
    mean = [sum(row[i] for row in x_train) / n for i in range(d)]
    std = [math.sqrt(sum((row[i] - mean[i]) ** 2 for row in x_train) / n) or 1.0 for i in range(d)]

    def apply(rows):
        return [[(v - m) / s for v, m, s in zip(row, mean, std)] for row in rows]

    return apply(x_train), apply(x_test)


def poly2(row):
    """Degree-2 polynomial features: x_i and every product x_i * x_j (i <= j)."""
    d = len(row)
    return row + [row[i] * row[j] for i in range(d) for j in range(i, d)]


def make_rff(rng, d, n_features, scale):
    """Random Fourier features approximating a Gaussian (RBF) kernel.

    phi_k(x) = sqrt(2) * cos(w_k . x + b_k),  w_k ~ N(0, scale^2 I),  b_k ~ U[0, 2 pi).
    Larger `scale` = narrower kernel = wigglier functions.  Each feature has
    unit variance; the usual 1/sqrt(n_features) factor is left out so that
    step sizes stay comparable across feature maps.
    """
    freqs = [[rng.gauss(0.0, scale) for _ in range(d)] for _ in range(n_features)]
    phases = [rng.uniform(0.0, 2.0 * math.pi) for _ in range(n_features)]
    root2 = math.sqrt(2.0)

    def phi(row):
        return [root2 * math.cos(dot(w, row) + b) for w, b in zip(freqs, phases)]

    return phi


def feature_map(params, rng, x_train, x_test):
    """Apply the chosen feature map to (standardised) train and test inputs."""
    x_train, x_test = standardise(x_train, x_test)
    kind = params["features"]
    if kind == "raw":
        return x_train, x_test
    if kind == "poly2":
        return [poly2(r) for r in x_train], [poly2(r) for r in x_test]
    phi = make_rff(rng, len(x_train[0]), params["rff_dim"], params["rff_scale"])
    return [phi(r) for r in x_train], [phi(r) for r in x_test]


# ---------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------
#
# Matrices are lists of rows.  A weight matrix W has one row per output unit
# (so a layer computes z = W x + b for each example x), and a mini-batch is a
# list of example rows.  Plain Python is slow per call but fast inside
# sum(map(...)), so the code is arranged so that the inner loops are long dot
# products: the weight gradient of a layer is computed once per mini-batch as
# dZ^T A (one dot product over the batch per weight) rather than example by
# example.

class Net:
    """phi -> [act(W1 phi + b1)] -> W2 h + b2 -> softmax."""

    def __init__(self, rng, n_in, n_hidden, n_out, activation):
        self.activation = activation
        sizes = [n_in, n_hidden, n_out] if n_hidden > 0 else [n_in, n_out]
        # One (W, b) pair per layer.  The hidden layer gets Glorot-style init
        # for tanh and He init for relu; the output layer starts at zero, so
        # the first predictions are uniform (loss = log n_out).
        self.weights, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            is_output = i == len(sizes) - 2
            std = 0.0 if is_output else math.sqrt((2.0 if activation == "relu" else 1.0) / fan_in)
            W = [[rng.gauss(0.0, std) for _ in range(fan_in)] for _ in range(fan_out)]
            self.weights.append(W)
            self.biases.append([0.0] * fan_out)
        # Momentum buffers ("velocities"), same shapes as the parameters.
        self.vel_w = [[[0.0] * fan_in for _ in W] for W, fan_in in zip(self.weights, sizes)]
        self.vel_b = [[0.0] * len(b) for b in self.biases]

    def layer(self, W, b, x):
        """z = W x + b for one example."""
        return [dot(row, x) + bias for row, bias in zip(W, b)]

    def act(self, z):
        if self.activation == "tanh":
            return [math.tanh(v) for v in z]
        return [v if v > 0.0 else 0.0 for v in z]

    def forward(self, x):
        """Activations of every layer for one example: [x, (h,) logits]."""
        acts = [x]
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = self.layer(W, b, acts[-1])
            acts.append(z if i == last else self.act(z))
        return acts

    def train_batch(self, xs, ys, lr, momentum, l2):
        """One SGD-with-momentum step on a mini-batch; returns its mean data loss."""
        n = len(xs)
        batch = [self.forward(x) for x in xs]      # batch[e] = [x, (h,) logits] of example e

        # Output layer: d loss / d logits = softmax(logits) - onehot(y).
        delta, total_loss = [], 0.0
        for acts, y in zip(batch, ys):
            p, loss = softmax_xent(acts[-1], y)
            p[y] -= 1.0
            delta.append(p)
            total_loss += loss

        # Walk back through the layers.  `delta` holds d loss / d z for the
        # current layer's pre-activations z, one row per example.
        for i in range(len(self.weights) - 1, -1, -1):
            W = self.weights[i]
            inputs = [acts[i] for acts in batch]    # what layer i saw, one row per example
            delta_t, inputs_t = transpose(delta), transpose(inputs)
            grad_W = [[dot(d, a) for a in inputs_t] for d in delta_t]   # dZ^T A
            grad_b = [sum(d) for d in delta_t]
            if i > 0:
                # d loss / d inputs = W^T delta, then through the activation.
                # `inputs` are this layer's inputs = the previous layer's outputs h:
                # tanh'(z) = 1 - h^2, relu'(z) = 1 if h > 0 else 0.
                back = [self.backprop_row(W, d) for d in delta]
                if self.activation == "tanh":
                    delta = [[g * (1.0 - a * a) for g, a in zip(g_row, h_row)]
                             for g_row, h_row in zip(back, inputs)]
                else:
                    delta = [[g if a > 0.0 else 0.0 for g, a in zip(g_row, h_row)]
                             for g_row, h_row in zip(back, inputs)]
            self.step(i, grad_W, grad_b, 1.0 / n, lr, momentum, l2)
        return total_loss / n

    @staticmethod
    def backprop_row(W, d):
        """W^T d for one example: the sum of the rows of W weighted by d."""
        out = [d[0] * w for w in W[0]]
        for dk, row in zip(d[1:], W[1:]):
            out = [o + dk * w for o, w in zip(out, row)]
        return out

    def step(self, i, grad_W, grad_b, scale, lr, momentum, l2):
        """v <- momentum * v - lr * (mean gradient + l2 * w);  w <- w + v  (no L2 on biases).

        `grad_W` and `grad_b` are sums over the batch; `scale` = 1 / batch size.
        """
        g_step, decay = lr * scale, lr * l2
        W, V = self.weights[i], self.vel_w[i]
        for r in range(len(W)):
            V[r] = [momentum * v - g_step * g - decay * w for v, g, w in zip(V[r], grad_W[r], W[r])]
            W[r] = list(map(add, W[r], V[r]))
        b, Vb = self.biases[i], self.vel_b[i]
        for r in range(len(b)):
            Vb[r] = momentum * Vb[r] - g_step * grad_b[r]
            b[r] += Vb[r]

    def n_weights(self):
        return sum(len(W) * len(W[0]) + len(b) for W, b in zip(self.weights, self.biases))


def softmax_xent(z, y):
    """Softmax probabilities and cross-entropy loss -log p[y], computed stably.

    Returns NaN loss if the logits are not finite (the caller checks for it).
    """
    m = max(z)
    if not math.isfinite(m):
        return [0.0] * len(z), math.nan
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e], math.log(s) - (z[y] - m)


def evaluate(net, xs, ys):
    """(accuracy, mean loss).  Non-finite outputs count as a wrong prediction."""
    correct, total_loss = 0, 0.0
    for x, y in zip(xs, ys):
        z = net.forward(x)[-1]
        _, loss = softmax_xent(z, y)
        total_loss += loss
        if all(math.isfinite(v) for v in z) and max(range(len(z)), key=z.__getitem__) == y:
            correct += 1
    return correct / len(xs), total_loss / len(xs)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def finite_or_none(v, digits=6):
    """JSON has no NaN/inf: report them as null."""
    return round(v, digits) if math.isfinite(v) else None


def main():
    started = time.perf_counter()
    params = load_params("params.json")
    rng = random.Random(params["seed"])

    x_train, y_train, x_test, y_test = data.load()
    f_train, f_test = feature_map(params, rng, x_train, x_test)
    net = Net(rng, len(f_train[0]), params["hidden_units"], data.N_CLASSES, params["activation"])

    order = list(range(len(f_train)))
    bs = params["batch_size"]
    diverged_epoch = None
    for epoch in range(1, params["epochs"] + 1):
        rng.shuffle(order)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            loss = net.train_batch(
                [f_train[i] for i in idx], [y_train[i] for i in idx],
                params["learning_rate"], params["momentum"], params["l2"],
            )
            if not math.isfinite(loss):
                diverged_epoch = epoch
                break
        if diverged_epoch is not None:
            print("train.py: warning: loss became non-finite in epoch %d; "
                  "stopping (diverged)" % epoch, file=sys.stderr)
            break

    train_acc, train_loss = evaluate(net, f_train, y_train)
    test_acc, test_loss = evaluate(net, f_test, y_test)
    if diverged_epoch is None and not math.isfinite(train_loss):
        diverged_epoch = params["epochs"]   # blew up in the very last step
    results = {
        "accuracy": test_acc,              # the metric: held-out test accuracy
        "test_loss": finite_or_none(test_loss),
        "train_accuracy": train_acc,
        "train_loss": finite_or_none(train_loss),
        "diverged": diverged_epoch is not None,
        "diverged_epoch": diverged_epoch,
        "n_train": len(f_train),
        "n_test": len(f_test),
        "n_classes": data.N_CLASSES,
        "n_features": len(f_train[0]),
        "n_weights": net.n_weights(),
        "seconds": round(time.perf_counter() - started, 3),  # the only non-deterministic field
        "params": params,
    }
    with open("results.json", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print("accuracy %.4f  train_accuracy %.4f  train_loss %s%s" % (
        test_acc, train_acc, results["train_loss"], "  DIVERGED" if results["diverged"] else ""))


if __name__ == "__main__":
    main()
