// Runs a TF.js graph model (model.json + weight .bin files) with the pure-JavaScript @tensorflow/tfjs on its CPU
// backend (no tfjs-node, no native binary, no wasm), as the reference our ONNX conversions are compared with.
//
// usage: node run_graph.mjs MODEL_JSON WEIGHTS IN_DIR OUT_DIR
//   WEIGHTS  the directory holding the .bin files named in weightsManifest, or the .bin itself when the manifest
//            names exactly one
//   IN_DIR   manifest.json: {"inputs": [{"name": "case0", "feed": "input_1", "shape": [1, 3, 416, 416],
//            "file": "case0.f32"}]}, each file raw little-endian float32
//   OUT_DIR  written: one raw little-endian float32 file per case and output (CASE_OUTPUT.f32, by index), and
//            manifest.json:
//            {"tfjs": "4.22.0", "backend": "cpu", "load_ms": .., "cases": [{"name", "ms", "outputs":
//            [{"name", "dtype", "shape", "file"}]}]}; outputs are every output of the model's signature
//            (else its output nodes), in that order; non-float32 outputs are cast to float32 (dtype says the original)
//
// Any error: a one-line message on stderr and exit status 1 (2 for a wrong command line).
import { readFileSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';

import * as tf from '@tensorflow/tfjs';

class UsageError extends Error {}

const BYTES = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2, complex64: 8 };

function fail(message, status = 1) {
  process.stderr.write(`run_graph: ${message}\n`);
  process.exit(status);
}

function readJson(path, what) {
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${what} ${path}: ${error.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} ${path} is not JSON: ${error.message}`);
  }
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

// Bytes a weight spec takes in the .bin: quantised weights are stored in their quantisation dtype.
function specBytes(spec) {
  const dtype = spec.quantization?.dtype ?? spec.dtype;
  const size = BYTES[dtype];
  if (size === undefined) {
    throw new Error(`weight ${spec.name}: dtype ${dtype} is not supported by this runner`);
  }
  return product(spec.shape) * size;
}

function concatBuffers(buffers) {
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const b of buffers) {
    out.set(b, offset);
    offset += b.byteLength;
  }
  return out.buffer;
}

// The model's artifacts, entirely from local files: specs and data concatenated in manifest order.
function loadArtifacts(modelJsonPath, weightsPath) {
  const model = readJson(modelJsonPath, 'model.json');
  if (model.modelTopology == null || !Array.isArray(model.weightsManifest)) {
    throw new Error(`${modelJsonPath} has no modelTopology or weightsManifest: not a TF.js model.json`);
  }
  const paths = model.weightsManifest.flatMap((group) => group.paths);
  const isDir = statSync(weightsPath, { throwIfNoEntry: false })?.isDirectory() ?? false;
  if (!isDir && paths.length !== 1) {
    throw new Error(`${modelJsonPath} names ${paths.length} weight files (${paths}): give their directory`);
  }
  const files = isDir ? paths.map((p) => join(weightsPath, p)) : [weightsPath];
  const buffers = files.map((file) => {
    try {
      return readFileSync(file);
    } catch (error) {
      throw new Error(`cannot read weights ${file}: ${error.message}`);
    }
  });
  const weightSpecs = model.weightsManifest.flatMap((group) => group.weights);
  const weightData = concatBuffers(buffers);
  const expected = weightSpecs.reduce((n, spec) => n + specBytes(spec), 0);
  if (expected !== weightData.byteLength) {
    throw new Error(
      `weights ${files} hold ${weightData.byteLength} bytes, the manifest of ${modelJsonPath} needs ${expected}`,
    );
  }
  return {
    modelTopology: model.modelTopology,
    weightSpecs,
    weightData,
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy,
    signature: model.signature,
    userDefinedMetadata: model.userDefinedMetadata,
  };
}

function readInput(inDir, entry) {
  for (const key of ['name', 'feed', 'shape', 'file']) {
    if (entry[key] == null) throw new Error(`${join(inDir, 'manifest.json')}: an input has no "${key}"`);
  }
  const file = join(inDir, entry.file);
  let bytes;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw new Error(`cannot read input ${file}: ${error.message}`);
  }
  if (bytes.byteLength !== product(entry.shape) * 4) {
    throw new Error(`input ${file} has ${bytes.byteLength} bytes, shape ${JSON.stringify(entry.shape)} needs float32`);
  }
  // Copy into an aligned buffer: a Buffer may start at an odd offset of a shared pool.
  const values = new Float32Array(product(entry.shape));
  new Uint8Array(values.buffer).set(bytes);
  return tf.tensor(values, entry.shape, 'float32');
}

function outputNames(model, artifacts) {
  const signed = Object.keys(artifacts.signature?.outputs ?? {});
  return signed.length > 0 ? signed : model.outputNodes;
}

async function runCase(model, names, entry, index, inDir, outDir) {
  const input = readInput(inDir, entry);
  const started = performance.now();
  let outputs = model.execute({ [entry.feed]: input }, names);
  outputs = Array.isArray(outputs) ? outputs : [outputs];
  const written = [];
  for (const [i, output] of outputs.entries()) {
    const values = await (output.dtype === 'float32' ? output : output.cast('float32')).data();
    const file = `${index}_${i}.f32`; // indices: names may clash once made safe for a file system
    writeFileSync(join(outDir, file), new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    written.push({ name: names[i], dtype: output.dtype, shape: output.shape, file });
  }
  const ms = performance.now() - started;
  tf.dispose([input, ...outputs]);
  return { name: entry.name, ms, outputs: written };
}

async function main(argv) {
  if (argv.length !== 4) {
    throw new UsageError(`usage: node ${basename(process.argv[1])} MODEL_JSON WEIGHTS IN_DIR OUT_DIR`);
  }
  const [modelJson, weights, inDir, outDir] = argv;
  const inputs = readJson(join(inDir, 'manifest.json'), 'input manifest').inputs;
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new Error(`${join(inDir, 'manifest.json')} has no "inputs" list`);
  }
  if (!(await tf.setBackend('cpu'))) throw new Error('the tfjs cpu backend did not initialise');
  await tf.ready();

  const loadStarted = performance.now();
  const artifacts = loadArtifacts(modelJson, weights);
  const model = await tf.loadGraphModel(tf.io.fromMemory(artifacts));
  const loadMs = performance.now() - loadStarted;
  const names = outputNames(model, artifacts);
  process.stdout.write(`tfjs ${tf.version.tfjs} backend=${tf.getBackend()} load ${loadMs.toFixed(1)} ms\n`);

  mkdirSync(outDir, { recursive: true });
  const cases = [];
  for (const [index, entry] of inputs.entries()) {
    const done = await runCase(model, names, entry, index, inDir, outDir);
    process.stdout.write(`${done.name}: ${done.ms.toFixed(1)} ms\n`);
    cases.push(done);
  }
  const manifest = { tfjs: tf.version.tfjs, backend: tf.getBackend(), load_ms: loadMs, cases };
  writeFileSync(join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 1));
}

process.on('unhandledRejection', (error) => fail(error?.stack ?? String(error)));
try {
  await main(process.argv.slice(2));
} catch (error) {
  fail(error instanceof UsageError ? error.message : (error?.message ?? String(error)), error instanceof UsageError ? 2 : 1);
}
