#!/usr/bin/env python3
"""Instructions per CONNECT tunnel, counted by valgrind's callgrind: repeatable whatever else the
machine is doing, unlike CPU time. Runs BINARY under callgrind on a temp config, makes N tunnels
(CONNECT, 4 bytes echoed, close) to an echo origin on 127.0.0.1, stops it with SIGTERM.

    python3 benches/tunnel_instructions.py target/release/egress-proxy 300 /tmp/a.out
    python3 benches/tunnel_instructions.py target/release/egress-proxy 1300 /tmp/b.out
    # per tunnel = (summary of b - summary of a) / 1000   (grep '^summary' in each file)
"""
import socket, sys, threading, time, subprocess, re, os
N=int(sys.argv[2]); binary=sys.argv[1]; out=sys.argv[3]
# echo origin
o=socket.socket(); o.bind(('127.0.0.1',0)); o.listen(512); oport=o.getsockname()[1]
def serve():
    while True:
        c,_=o.accept()
        def h(c):
            try:
                while True:
                    d=c.recv(65536)
                    if not d: break
                    c.sendall(d)
            finally: c.close()
        threading.Thread(target=h,args=(c,),daemon=True).start()
threading.Thread(target=serve,daemon=True).start()
fp=socket.socket(); fp.bind(('127.0.0.1',0)); fixed=fp.getsockname()[1]; fp.close()
cfg=f"""listeners: {{ explicit: 127.0.0.1:{fixed} }}
allow:
  - {{ name: echo, hosts: [echo.test], ports: [{oport}], tls: any }}
upstream: {{ allow_cidrs: [127.0.0.0/8] }}
resolver: {{ hosts: {{ echo.test: 127.0.0.1 }} }}
"""
open('/tmp/ct.yaml','w').write(cfg)
p=subprocess.Popen(['valgrind','--tool=callgrind','--callgrind-out-file='+out,binary,'run','--config','/tmp/ct.yaml'],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE,text=True)
port=None
while port is None:
    l=p.stderr.readline()
    m=re.search(r'listening: explicit on 127.0.0.1:(\d+)',l)
    if m: m=re.search(r'(\d+)$',str(fixed))
    if m: port=int(m.group(1))
threading.Thread(target=lambda: [None for _ in p.stderr],daemon=True).start()
for i in range(N):
    s=socket.create_connection(('127.0.0.1',port))
    s.sendall(f"CONNECT echo.test:{oport} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    buf=b''
    while b'\r\n\r\n' not in buf: buf+=s.recv(100)
    s.sendall(b'ping'); r=b''
    while len(r)<4: r+=s.recv(4)
    s.close()
time.sleep(2)
p.send_signal(15); p.wait()
