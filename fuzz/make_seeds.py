#!/usr/bin/env python3
"""fuzz/make_seeds.py: (re)write the seed files of fuzz/corpus/ (docs/fuzzing.md).

Seeds are small valid inputs plus a few malformed ones; findings are added to the corpus by
hand (named regress_*) and are not touched here. Run from the repository root."""
import json, os, random, re, struct, glob

C = 'fuzz/corpus'

def w(target, name, data):
    os.makedirs(f'{C}/{target}', exist_ok=True)
    with open(f'{C}/{target}/{name}', 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# fuzz_parse: the examples, every flow block of docs/language.md, some golden bad files
for p in sorted(glob.glob('examples/*.flow')):
    w('fuzz_parse', 'example_' + os.path.basename(p), open(p, 'rb').read())
doc = open('docs/language.md').read()
for i, m in enumerate(re.finditer(r'```flow\n(.*?)```', doc, re.S)):
    w('fuzz_parse', f'doc_{i:02d}.flow', m.group(1))
for name in ['binary_junk', 'comment_only', 'empty', 'error_cap', 'decl_two_inputs', 'dtype_typo',
             'form_graph_no_output', 'form_layer_then_graph']:
    p = f'tests/bad/{name}.flow'
    if os.path.exists(p):
        w('fuzz_parse', 'bad_' + name + '.flow', open(p, 'rb').read())

# fuzz_npy: first byte even = NPY, odd = CSV
def npy(descr, shape, values, version=1, fortran=False):
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, 'True' if fortran else 'False', repr(tuple(shape)))
    pre = 10 if version == 1 else 12
    pad = (64 - (pre + len(hdr) + 1) % 64) % 64
    hdr = hdr + ' ' * pad + '\n'
    if version == 1:
        head = b'\x93NUMPY\x01\x00' + struct.pack('<H', len(hdr))
    else:
        head = b'\x93NUMPY' + bytes([version, 0]) + struct.pack('<I', len(hdr))
    fmt = '<f' if descr == '<f4' else '<d'
    return head + hdr.encode() + b''.join(struct.pack(fmt, v) for v in values)

w('fuzz_npy', 'npy_f8_2x3', b'\x00' + npy('<f8', (2, 3), [1, 2, 3, 4.5, -5, 6e10]))
w('fuzz_npy', 'npy_f4_4', b'\x00' + npy('<f4', (4,), [0.5, -1, 2, 3]))
w('fuzz_npy', 'npy_v2_f8_1x2', b'\x00' + npy('<f8', (1, 2), [7, 8], version=2))
w('fuzz_npy', 'npy_v3_f4_2x1', b'\x00' + npy('<f4', (2, 1), [1, 2], version=3))
w('fuzz_npy', 'npy_bad_fortran', b'\x00' + npy('<f8', (2, 2), [1, 2, 3, 4], fortran=True))
w('fuzz_npy', 'npy_bad_truncated', b'\x00' + npy('<f8', (3, 3), [1, 2, 3, 4])[:-3])
w('fuzz_npy', 'npy_bad_nan', b'\x00' + npy('<f8', (1, 2), [float('nan'), 1]))
w('fuzz_npy', 'npy_bad_descr', b'\x00' + npy('<f8', (1, 1), [1]).replace(b'<f8', b'<i8'))
w('fuzz_npy', 'csv_plain', b'\x01' + b'1,2,3\n4,5,6\n')
w('fuzz_npy', 'csv_header_crlf', b'\x01' + b'a,b\r\n1.5,-2e3\r\n.5,7\r\n')
w('fuzz_npy', 'csv_spaces', b'\x01' + b' 1 , 2 \n3,4')
w('fuzz_npy', 'csv_bad_ragged', b'\x01' + b'1,2\n3\n')
w('fuzz_npy', 'csv_bad_word', b'\x01' + b'1,2\n3,abc\n')
w('fuzz_npy', 'csv_bad_inf', b'\x01' + b'1,inf\n')

# fuzz_weights: safetensors for the fixed model of fuzz/fuzz_weights.c (flow w, D = 3)
params = [('base.mean', [3]), ('base.log_scale', [3]), ('layer1.log_scale', [3]), ('layer1.bias', [3]),
          ('layer2.net.dense0.w', [2, 4]), ('layer2.net.dense0.b', [4]), ('layer2.net.dense1.w', [4, 2]),
          ('layer2.net.dense1.b', [2]), ('layer3.lu', [3, 3]), ('layer3.bias', [3])]

def st(tensors, meta=None, dtype='F64'):
    hdr, blob = {}, b''
    if meta is not None:
        hdr['__metadata__'] = meta
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        vals = [0.01 * (i + 1) for i in range(n)]
        data = b''.join(struct.pack('<d' if dtype == 'F64' else '<f', v) for v in vals)
        hdr[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    return struct.pack('<Q', len(h)) + h + blob

w('fuzz_weights', 'valid_f64', st(params, {'nfc.flow': 'w', 'nfc.version': '0.1.0'}))
w('fuzz_weights', 'valid_f32', st(params, dtype='F32'))
w('fuzz_weights', 'bad_hash', st(params, {'nfc.model_hash': '0000000000000000', 'nfc.flow': 'x'}))
w('fuzz_weights', 'bad_shape', st([(n, [s[0] + 1] + s[1:]) for n, s in params]))
w('fuzz_weights', 'bad_missing', st(params[:-1]))
w('fuzz_weights', 'bad_truncated', st(params)[:-5])
w('fuzz_weights', 'bad_header_size', struct.pack('<Q', 1 << 40) + b'{}')
w('fuzz_weights', 'empty_header', struct.pack('<Q', 2) + b'{}')

# fuzz_flow: random bytes (the generator reads any bytes as a flow and a batch)
r = random.Random(6)
for i in range(12):
    w('fuzz_flow', f'seed_{i:02d}', bytes(r.randrange(256) for _ in range(24 + 16 * i)))
w('fuzz_flow', 'seed_zeros', b'')
