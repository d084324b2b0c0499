"""The seeds' own TensorFlow training steps, written from SEED-RECIPES.md (R3, R2), for
`bench/tf_anchor.py` to time against ganforge. Runs under a Python with TensorFlow (never the
project's), as a child process that answers one JSON line per request on stdin:

    {"cmd": "time", "steps": N}   ->  {"seconds": wall, "cpu": cpu seconds, "images": n}

Started as `python tf_seed.py --recipe tf-dcgan-mnist|seed001-dcgan-mnist --data X.npy --threads T`.
Its first line reports TensorFlow's version, the parameter counts, and the result of checking that
one step changes what the recipe says it changes (and nothing else).

- tf-dcgan-mnist (R3), the tensorflow.org tutorial: Keras Sequential G and D, one `@tf.function`
  step with two GradientTapes over one forward pass, BCE from logits, Adam(1e-4) each, batch 256,
  the images normalised once to [-1, 1] and fed by tf.data (shuffled, batched) as the tutorial does.
- seed001-dcgan-mnist (R2), the Keras textbook loop: `train_on_batch` of D on reals (label 1), of
  D on fakes (label 0), then of the stacked G -> frozen D on the same z (label 1); batch 32, real
  indices drawn with replacement, fakes from G in inference mode (`predict_on_batch`: `predict`
  would add a tf.data pipeline per call, which only makes TensorFlow slower).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

LATENT = 100


def tf_generator() -> keras.Model:
    slope = 0.3  # the tutorial's LeakyReLU(): Keras' default slope
    return keras.Sequential([
        keras.Input((LATENT,)),
        layers.Dense(7 * 7 * 256, use_bias=False), layers.BatchNormalization(), layers.LeakyReLU(slope),
        layers.Reshape((7, 7, 256)),
        layers.Conv2DTranspose(128, 5, strides=1, padding="same", use_bias=False),
        layers.BatchNormalization(), layers.LeakyReLU(slope),
        layers.Conv2DTranspose(64, 5, strides=2, padding="same", use_bias=False),
        layers.BatchNormalization(), layers.LeakyReLU(slope),
        layers.Conv2DTranspose(1, 5, strides=2, padding="same", use_bias=False, activation="tanh"),
    ])


def tf_discriminator() -> keras.Model:
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(64, 5, strides=2, padding="same"), layers.LeakyReLU(0.3), layers.Dropout(0.3),
        layers.Conv2D(128, 5, strides=2, padding="same"), layers.LeakyReLU(0.3), layers.Dropout(0.3),
        layers.Flatten(), layers.Dense(1),
    ])


def upconv_generator() -> keras.Model:
    return keras.Sequential([
        keras.Input((LATENT,)),
        layers.Dense(128 * 7 * 7, activation="relu"), layers.Reshape((7, 7, 128)),
        layers.UpSampling2D(), layers.Conv2D(128, 3, padding="same"), layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.UpSampling2D(), layers.Conv2D(64, 3, padding="same"), layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.Conv2D(1, 3, padding="same", activation="tanh"),
    ])


def upconv_discriminator() -> keras.Model:
    blocks: list = [keras.Input((28, 28, 1)), layers.Conv2D(32, 3, strides=2, padding="same"),
                    layers.LeakyReLU(0.2), layers.Dropout(0.25)]
    for filters in (64, 128, 256):
        blocks += [layers.Conv2D(filters, 3, strides=2, padding="same"), layers.BatchNormalization(),
                   layers.LeakyReLU(0.2), layers.Dropout(0.25)]
    return keras.Sequential(blocks + [layers.Flatten(), layers.Dense(1, activation="sigmoid")])


def snapshot(variables) -> list[np.ndarray]:
    return [v.numpy().copy() for v in variables]


def changed(before: list[np.ndarray], variables) -> list[bool]:
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


class TutorialStep:
    """R3: the tutorial's train_step and its tf.data pipeline."""

    batch = 256

    def __init__(self, images: np.ndarray) -> None:
        self.G, self.D = tf_generator(), tf_discriminator()
        self.opt_g, self.opt_d = keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-4)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        x = (images.reshape(-1, 28, 28, 1).astype("float32") - 127.5) / 127.5
        # Full batches only: a short last batch would trace the step a second time mid-measurement.
        ds = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x)).batch(self.batch, drop_remainder=True)
        self.batches = iter(ds.repeat())
        self.train_step = tf.function(self._step)

    def _step(self, images):
        noise = tf.random.normal([self.batch, LATENT])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated = self.G(noise, training=True)
            real_output = self.D(images, training=True)
            fake_output = self.D(generated, training=True)
            gen_loss = self.bce(tf.ones_like(fake_output), fake_output)
            disc_loss = (self.bce(tf.ones_like(real_output), real_output)
                         + self.bce(tf.zeros_like(fake_output), fake_output))
        g_grads = gen_tape.gradient(gen_loss, self.G.trainable_variables)
        d_grads = disc_tape.gradient(disc_loss, self.D.trainable_variables)
        self.opt_g.apply_gradients(zip(g_grads, self.G.trainable_variables))
        self.opt_d.apply_gradients(zip(d_grads, self.D.trainable_variables))
        return gen_loss, disc_loss

    def step(self) -> int:
        self.last = self.train_step(next(self.batches))
        return self.batch

    def finish(self) -> None:
        float(self.last[0])  # the step has run to the end before the clock stops

    def counts(self) -> dict:
        return {"G": self.G.count_params(), "D": self.D.count_params()}

    def check(self) -> dict:
        """One step changes every trainable variable of both nets."""
        g0, d0 = snapshot(self.G.trainable_variables), snapshot(self.D.trainable_variables)
        self.step()
        return {"step updates all of G": all(changed(g0, self.G.trainable_variables)),
                "step updates all of D": all(changed(d0, self.D.trainable_variables))}


class KerasLoop:
    """R2: the textbook's three train_on_batch calls per iteration."""

    batch = 32

    def __init__(self, images: np.ndarray) -> None:
        self.x = (images.reshape(-1, 28, 28, 1).astype("float32") - 127.5) / 127.5
        self.G, self.D = upconv_generator(), upconv_discriminator()
        self.D.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam())
        self.D.trainable = False
        z = keras.Input((LATENT,))
        self.gan = keras.Model(z, self.D(self.G(z)))
        self.gan.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam())
        self.ones, self.zeros = np.ones((self.batch, 1), "float32"), np.zeros((self.batch, 1), "float32")
        self.rng = np.random.default_rng(0)

    def step(self) -> int:
        real = self.x[self.rng.integers(0, len(self.x), self.batch)]
        noise = self.rng.standard_normal((self.batch, LATENT)).astype("float32")
        fake = self.G.predict_on_batch(noise)
        # Keras 3 reads `trainable` when it traces each model's train function: D trains on its
        # own, and is frozen (BatchNorm in inference mode) inside the stacked model.
        self.D.trainable = True
        self.D.train_on_batch(real, self.ones)
        self.D.train_on_batch(fake, self.zeros)
        self.D.trainable = False
        self.gan.train_on_batch(noise, self.ones)
        return self.batch

    def finish(self) -> None:
        pass  # train_on_batch returns host numbers: each call has finished

    def counts(self) -> dict:
        return {"G": self.G.count_params(), "D": self.D.count_params()}

    def check(self) -> dict:
        """D's own steps change D's weights (and BatchNorm statistics), not G's; the stacked
        step changes G's weights and statistics, and nothing of D's."""
        real = self.x[:self.batch]
        self.D.trainable = True
        g0, d0 = snapshot(self.G.weights), snapshot(self.D.weights)
        self.D.train_on_batch(real, self.ones)
        d_trained, g_kept = all(changed(d0, self.D.weights)), not any(changed(g0, self.G.weights))
        self.D.trainable = False
        g0, d0 = snapshot(self.G.weights), snapshot(self.D.weights)
        self.gan.train_on_batch(self.rng.standard_normal((self.batch, LATENT)).astype("float32"), self.ones)
        return {"D step updates all of D": d_trained, "D step leaves G": g_kept,
                "G step updates all of G": all(changed(g0, self.G.weights)),
                "G step leaves D (weights and BN statistics)": not any(changed(d0, self.D.weights))}


def layer_times(batch: int, repeat: int) -> list[dict]:
    """R3's layers one by one at `batch`: median CPU ms of the forward pass alone, and of the forward
    pass with the gradients the step takes (the input's, except for G's first layer, and the
    layer's weights'), each as its own `tf.function`."""
    rows = []
    for net_name, net, shape in (("G", tf_generator(), (batch, LATENT)), ("D", tf_discriminator(), (batch, 28, 28, 1))):
        x = tf.random.normal(shape)
        for i, layer in enumerate(net.layers):
            y = layer(x, training=True)
            gy = tf.random.normal(y.shape)
            wrt_input = not (net_name == "G" and i == 0)
            forward = tf.function(lambda x, layer=layer: layer(x, training=True))

            @tf.function
            def both(x, gy, layer=layer, wrt_input=wrt_input):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x, training=True)
                grads = tape.gradient(y, ([x] if wrt_input else []) + layer.trainable_variables, output_gradients=gy)
                # y too: a conv's gradients do not need its output, and grappler would prune the
                # forward pass that a training step cannot skip.
                return grads, y

            rows.append({"net": net_name, "index": i, "layer": type(layer).__name__,
                         "forward_ms": _median_ms(lambda: forward(x), repeat),
                         "with_grads_ms": _median_ms(lambda: both(x, gy), repeat)})
            x = y
    return rows


def _median_ms(fn, repeat: int) -> float:
    """Median CPU time of this process (all its threads) per call, in ms."""
    for _ in range(2):
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = []
    for _ in range(repeat):
        start = time.process_time()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times.append(time.process_time() - start)
    return round(sorted(times)[len(times) // 2] * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="tf-dcgan-mnist", choices=("tf-dcgan-mnist", "seed001-dcgan-mnist"))
    ap.add_argument("--data", help=".npy file of N x 28 x 28 uint8 images (required unless --layers)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--layers", type=int, default=0, metavar="REPEAT",
                    help="instead: time R3's layers one by one, REPEAT times each, and print them")
    args = ap.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.layers:
        reply({"tensorflow": tf.__version__, "layers": layer_times(256, args.layers)})
        return
    if not args.data:
        ap.error("--data is required")
    keras.utils.set_random_seed(0)
    images = np.load(args.data)
    impl = (TutorialStep if args.recipe == "tf-dcgan-mnist" else KerasLoop)(images)
    checks = impl.check()  # also the first step: traces the functions
    reply({"tensorflow": tf.__version__, "keras": keras.__version__, "counts": impl.counts(), "checks": checks,
           "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"), "threads": args.threads,
           "batch": impl.batch})
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] != "time":
            break
        start, cpu = time.perf_counter(), time.process_time()
        images_used = sum(impl.step() for _ in range(request["steps"]))
        impl.finish()
        reply({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "images": images_used})
    # TensorFlow's own teardown (thread pools, the tf.data iterator) can take a minute on a busy
    # machine; everything has been replied, so leave at once.
    os._exit(0)


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
