"""Random real-shape inputs for the td1 benchmark: teacher BERT-base + student 4L/312 weights
(`teacher.*`, `student.*`, Hugging Face names) and a batch of 32 x 64 with padding, written to
the directory given as the first argument (default out/bench)."""
import json, os, sys
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, 'out', 'bench')
os.makedirs(OUT, exist_ok=True)

def specs(cfg, fit):
    h, i, L = cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers']
    s = {'bert.embeddings.word_embeddings.weight': (cfg['vocab_size'], h), 'bert.embeddings.position_embeddings.weight': (512, h),
         'bert.embeddings.token_type_embeddings.weight': (2, h), 'bert.embeddings.LayerNorm.weight': (h,), 'bert.embeddings.LayerNorm.bias': (h,)}
    for l in range(L):
        p = f'bert.encoder.layer.{l}'
        for q in ['query', 'key', 'value']:
            s[f'{p}.attention.self.{q}.weight'] = (h, h); s[f'{p}.attention.self.{q}.bias'] = (h,)
        s[f'{p}.attention.output.dense.weight'] = (h, h); s[f'{p}.attention.output.dense.bias'] = (h,)
        s[f'{p}.attention.output.LayerNorm.weight'] = (h,); s[f'{p}.attention.output.LayerNorm.bias'] = (h,)
        s[f'{p}.intermediate.dense.weight'] = (i, h); s[f'{p}.intermediate.dense.bias'] = (i,)
        s[f'{p}.output.dense.weight'] = (h, i); s[f'{p}.output.dense.bias'] = (h,)
        s[f'{p}.output.LayerNorm.weight'] = (h,); s[f'{p}.output.LayerNorm.bias'] = (h,)
    s['bert.pooler.dense.weight'] = (h, h); s['bert.pooler.dense.bias'] = (h,)
    s['classifier.weight'] = (2, h); s['classifier.bias'] = (2,)
    if fit: s['fit_dense.weight'] = (768, h); s['fit_dense.bias'] = (768,)
    return s
t = json.load(open(os.path.join(ROOT, 'configs/bert-base-teacher.json'))); st = json.load(open(os.path.join(ROOT, 'configs/student-4l-312.json')))
w = {}
for pre, cfg, fit in [('teacher', t, False), ('student', st, True)]:
    for n, shp in specs(cfg, fit).items():
        v = (1.0 + 0.02 * rng.standard_normal(shp)) if 'LayerNorm.weight' in n else 0.02 * rng.standard_normal(shp)
        w[f'{pre}.{n}'] = v.astype(np.float32)
save_file(w, os.path.join(OUT, 'weights.safetensors'))
ids = rng.integers(1, 30522, (32, 64)).astype(np.int32); mask = np.ones((32, 64), np.int32)
for r in range(32):
    L = 64 - (r % 16) * 2; ids[r, L:] = 0; mask[r, L:] = 0
save_file({'input_ids': ids, 'input_mask': mask, 'segment_ids': np.zeros((32, 64), np.int32)}, os.path.join(OUT, 'batch.safetensors'))
