#!/usr/bin/env python3
"""Regenerate the seed corpus of fuzz-proto: corpus/{frames,messages,broken}/, and of
fuzz-framer: corpus/streams/ (several frames in a row, some announcing fds)."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'corpus')


def frame(payload):
    if isinstance(payload, (dict, list)):
        payload = json.dumps(payload, separators=(',', ':'))
    if isinstance(payload, str):
        payload = payload.encode()
    return b'GWRM' + struct.pack('<I', len(payload)) + payload


def req(i, method, params=None, fds=None):
    m = {'id': i, 'method': 'gpuwarm.' + method, 'params': params if params is not None else {}}
    if fds:
        m['fds'] = fds
    return m


def reply(i, result, fds=None):
    m = {'id': i, 'result': result}
    if fds:
        m['fds'] = fds
    return m


def error(i, name, message, **extra):
    e = {'name': 'gpuwarm.Error.' + name, 'message': message}
    e.update(extra)
    return {'id': i, 'error': e}


UUID = 'GPU-8f3a1c2e-1b2d-4e5f-9a0b-1c2d3e4f5a6b'
UUID2 = 'GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9'
STATE = {'pid': 123, 'state': 'locked', 'duration_ms': 12.3}
STEPS = {'pid': 123, 'state': 'checkpointed', 'path': 'driver', 'duration_ms': 812.0,
         'steps': [{'step': 'lock', 'duration_ms': 1.2},
                   {'step': 'checkpoint', 'duration_ms': 810.8}]}
STATUS = {
    'daemon': {'version': '0.1.0', 'protocol': 1, 'pid': 1234, 'uptime_s': 12.5,
               'socket': '/run/gpu-warmd/gpu-warmd.sock', 'staging_mib': 1024, 'clients': 2},
    'driver': {'loaded': True, 'library': 'libcuda.so.1', 'version': 13000,
               'checkpoint_api': True, 'vmm_api': True, 'error': None},
    'gpus': [{'index': 0, 'uuid': UUID, 'pci_bus_id': '0000:3b:00.0',
              'name': 'NVIDIA H100 80GB HBM3', 'memory_total_mib': 81559,
              'memory_free_mib': 80000, 'state': 'ready', 'context': 'primed',
              'staging': {'bytes': 1073741824, 'buffers': 4, 'pin_ms': 520.3},
              'leases': 1, 'in_flight': 0, 'error': None}],
    'leases': [{'id': 7, 'gpu': 0, 'uuid': UUID, 'client_pid': 99, 'client_uid': 1000,
                'age_s': 3.2}],
    'operations': {k: {'ok': 3, 'failed': 0}
                   for k in ('lock', 'checkpoint', 'restore', 'unlock', 'suspend', 'resume')},
}

FRAMES = {
    'req-hello': req(1, 'Hello', {'version': 1, 'client': 'warmctl 0.1.0'}),
    'req-status': req(2, 'Status'),
    'req-drain': req(3, 'Drain', {'gpus': ['0', UUID, '0000:3b:00.0'], 'wait': True,
                                  'timeout_ms': 30000}),
    'req-undrain': req(4, 'Undrain', {'gpus': ['3b:00.0']}),
    'req-lease-acquire': req(5, 'LeaseAcquire', {'min_free_mib': 4096}),
    'req-lease-release': req(6, 'LeaseRelease', {'lease': 7}),
    'req-process-state': req(7, 'ProcessState', {'pid': 123}),
    'req-process-lock': req(8, 'ProcessLock', {'pid': 123, 'timeout_ms': 10000}),
    'req-process-checkpoint': req(9, 'ProcessCheckpoint', {'pid': 123}),
    'req-process-restore': req(10, 'ProcessRestore', {'pid': 123, 'gpu': '1',
                                                      'gpu_pairs': [[UUID, UUID2]]}),
    'req-process-unlock': req(11, 'ProcessUnlock', {'pid': 123}),
    'req-suspend': req(12, 'Suspend', {'pid': 123, 'timeout_ms': 10000}),
    'req-resume': req(13, 'Resume', {'pid': 123, 'gpu_pairs': [[UUID, UUID2]]}, fds=2),
    'rep-hello': reply(1, {'version': 1, 'server': 'gpu-warmd 0.1.0', 'pid': 1234}),
    'rep-status': reply(2, STATUS),
    'rep-drain': reply(3, {'gpus': [{'index': 0, 'uuid': UUID, 'state': 'drained'}]}),
    'rep-lease': reply(5, {'lease': 7, 'gpu': {'index': 0, 'uuid': UUID,
                                               'pci_bus_id': '0000:3b:00.0'}}),
    'rep-process-state': reply(7, {'pid': 123, 'state': 'running', 'restore_tid': 130}),
    'rep-process-lock': reply(8, STATE),
    'rep-suspend': reply(12, STEPS, fds=1),
    'err-cuda': error(9, 'Cuda', 'cuCheckpointProcessLock(pid 123): CUDA_ERROR_ILLEGAL_STATE '
                      '(401): operation not permitted', cuda_error=401),
    'err-version': error(1, 'ProtocolVersionMismatch',
                         'protocol version mismatch (client 2, server 1)'),
    'err-permission': error(8, 'PermissionDenied', 'pid 1 belongs to uid 0'),
    'req-agent-attach': req(2, 'AgentAttach', {'pid': 4242, 'tid': 4250, 'ranges': 3,
                                               'bytes': 8589934592, 'restored': False}),
    'req-agent-update': req(3, 'AgentUpdate', {'ranges': 4, 'bytes': 9663676416}),
    'req-agent-export': req(100, 'Agent.Export', {'offset': 0}),
    'rep-agent-export': reply(100, {'total': 1, 'ranges': [{'va': '0x7f2a00000000', 'size': 2147483648,
                                                'device': 0, 'uuid': UUID}]}, fds=1),
    'req-agent-map': req(102, 'Agent.Map', {'ranges': [{'va': '0x7f2a00000000',
                                                         'size': 2147483648, 'device': 0}]},
                         fds=1),
    'rep-agent-ping': reply(103, {'pid': 4242, 'ranges': 1, 'bytes': 2147483648}),
    'err-agent': error(104, 'Agent', 'agent of pid 4242: cuMemExportToShareableHandle failed'),
}

MESSAGES = {
    'hello': json.dumps(FRAMES['req-hello']),
    'status-reply': json.dumps(FRAMES['rep-status'], indent=1),
    'error-unicode': json.dumps(error(3, 'Internal', 'caf\u00e9 \u20ac \U0001F600 "q" \\ \n'),
                                ensure_ascii=False),
    'error-escapes': json.dumps(error(3, 'Internal', 'caf\u00e9 \U0001F600 \t')),
    'max-id': '{"id":9007199254740992,"result":{}}',
    'depth-16': '{"id":1,"result":{"a":' + '[' * 14 + ']' * 14 + '}}',
    'numbers': '{"id":1e3,"result":{"a":-0,"b":1.5e-300,"c":1e300,"d":[0,-1,2.5,1E+2]}}',
    'unknown-member': '{"id":4,"result":{},"trace":{"x":[1,2,3]}}',
}

BROKEN = {
    'bad-magic.bin': b'GWRX' + struct.pack('<I', 2) + b'{}',
    'http.bin': b'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
    'len-4gib.bin': b'GWRM\xff\xff\xff\xff{"id":1}',
    'len-0.bin': b'GWRM\x00\x00\x00\x00',
    'len-1.bin': b'GWRM\x01\x00\x00\x00{',
    'len-over.bin': b'GWRM' + struct.pack('<I', (1 << 20) + 1),
    'truncated.bin': frame(FRAMES['req-hello'])[:20],
    'two-frames.bin': frame(FRAMES['req-hello']) + frame(FRAMES['req-status']),
    'then-garbage.bin': frame(FRAMES['req-status']) + b'GWRMxxxx',
    'deep.bin': frame('{"id":1,"result":' + '[' * 3000),
    'deep-17.bin': frame('{"id":1,"result":{"a":' + '[' * 15 + ']' * 15 + '}}'),
    'nul.bin': frame(b'{"id":1,\x00"result":{}}'),
    'nul-escape.bin': frame('{"id":1,"result":{"s":"a\\u0000b"}}'),
    'id-2p53p1.bin': frame('{"id":9007199254740993,"result":{}}'),
    'id-negative.bin': frame('{"id":-1,"result":{}}'),
    'id-fraction.bin': frame('{"id":1.5,"result":{}}'),
    'both.bin': frame('{"id":1,"method":"gpuwarm.Hello","result":{}}'),
    'method-bad.bin': frame('{"id":1,"method":"gpuwarm/Hello"}'),
    'fds-201.bin': frame('{"id":1,"result":{},"fds":201}'),
    'bad-utf8.bin': frame(b'{"id":1,"result":{"s":"\xc0\xaf\xed\xa0\x80"}}'),
    'dup-id.bin': frame('{"id":1,"id":2,"result":{}}'),
    'bom.bin': frame(b'\xef\xbb\xbf{"id":1,"result":{}}'),
    'error-no-name.bin': frame('{"id":1,"error":{"message":"m"}}'),
    # found by libFuzzer: nested duplicate member, number with a leading zero
    'overflow-inf.json': '{"id":1e3,"result":{"a":-0,"b":1.5e0300,"c":1e315,"d":[0]}}',
    'dup-key-nested.json': '{"id":1e3,"result":{"a":-0,"b":07e-300,"b":0e300,"d":[0,-1,2.5,1E+2]}}',
}


def stream(*names):
    return b''.join(frame(FRAMES[n]) for n in names)


# Conversations as one byte stream each: the framer fuzzer cuts them into chunks, attaching
# to a frame's first chunk the fds it announces.
STREAMS = {
    'hello-status.bin': stream('req-hello', 'req-status', 'req-drain'),
    'agent-map.bin': stream('req-agent-map', 'req-status', 'req-agent-map'),
    'agent-export.bin': stream('rep-agent-ping', 'rep-agent-export', 'rep-agent-export'),
    'suspend-resume.bin': stream('req-suspend', 'rep-suspend', 'req-resume', 'err-cuda'),
    'progress.bin': frame({'id': 4, 'progress': {'step': 'copy', 'done_bytes': 1 << 30,
                                                 'total_bytes': 1 << 31, 'elapsed_ms': 250}}) +
                    stream('rep-suspend'),
}


def write(sub, name, data):
    d = os.path.join(OUT, sub)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def main():
    for name, msg in FRAMES.items():
        write('frames', name + '.bin', frame(msg))
    for name, text in MESSAGES.items():
        write('messages', name + '.json', text)
    for name, data in BROKEN.items():
        write('broken', name, data)
    for name, data in STREAMS.items():
        write('streams', name, data)
    return 0


if __name__ == '__main__':
    sys.exit(main())
