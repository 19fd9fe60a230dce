#!/usr/bin/env python3
"""(Adapted from the team's reference notes; used by e2e/cni/cri.sh.) Minimal crictl stand-in (CRI v1 over gRPC) -- enough to make containerd call CNI
ADD/DEL exactly as kubelet would.  Needs: pip install container-runtime-interface-api
usage:
  cri.py SOCK version | status | pods
  cri.py SOCK runp NAME [NAMESPACE] [HOSTPORT:CTRPORT]  -> prints pod sandbox id + IP (CNI ADD)
  cri.py SOCK create POD_ID IMAGE [CMD...]              -> create+start a container in the pod
                                                           (default CMD: /bin/sleep 3600), prints its id
  cri.py SOCK execsync CTR_ID CMD...                    -> run CMD in the container (ExecSync)
  cri.py SOCK rmc CTR_ID                                -> stop + remove the container
  cri.py SOCK exec POD_ID IMAGE CMD...                  -> create + execsync + rmc in one go
  cri.py SOCK stopp POD_ID | rmp POD_ID                 -> StopPodSandbox (CNI DEL), RemovePodSandbox
"""
import os, sys, time, uuid, json
import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1.api_pb2_grpc import RuntimeServiceStub

sock, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
rt = RuntimeServiceStub(grpc.insecure_channel("unix://" + sock))


def pod_config(name, ns, ports):
    pm = []
    for p in ports:
        h, c = p.split(":")
        pm.append(pb.PortMapping(protocol=pb.TCP, container_port=int(c), host_port=int(h)))
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace=ns, uid=str(uuid.uuid4()), attempt=0),
        hostname=name, log_directory=os.environ.get("POD_LOG_DIR", "/tmp/cri-podlogs"), port_mappings=pm,
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=[ns + ".svc.cluster.local"], options=["ndots:5"]),
        labels={"app": name}, annotations={"example.com/note": "cni-test", "kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "20M"},
        linux=pb.LinuxPodSandboxConfig(cgroup_parent="", security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))))


def create(pod_id, image, argv):
    st = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    cfg = pod_config(st.metadata.name, st.metadata.namespace, [])
    cfg.metadata.uid = st.metadata.uid
    c = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, sandbox_config=cfg,
        config=pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"),
                                  image=pb.ImageSpec(image=image),
                                  command=argv or ["/bin/sleep", "3600"], log_path="app.log")))
    rt.StartContainer(pb.StartContainerRequest(container_id=c.container_id))
    return c.container_id


def execsync(ctr_id, argv):
    r = rt.ExecSync(pb.ExecSyncRequest(container_id=ctr_id, cmd=argv, timeout=10))
    sys.stdout.write(r.stdout.decode()); sys.stderr.write(r.stderr.decode())
    return r.exit_code


def rmc(ctr_id):
    rt.StopContainer(pb.StopContainerRequest(container_id=ctr_id, timeout=0))
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr_id))


if cmd == "version":
    print(rt.Version(pb.VersionRequest()))
elif cmd == "status":
    print(rt.Status(pb.StatusRequest(verbose=False)))
elif cmd == "runp":
    name = args[0]; ns = args[1] if len(args) > 1 else "default"; ports = args[2:]
    t0 = time.monotonic()
    r = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(name, ns, ports)))
    dt = time.monotonic() - t0
    st = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=r.pod_sandbox_id))
    print(json.dumps({"id": r.pod_sandbox_id, "ip": st.status.network.ip,
                      "runp_seconds": round(dt, 3)}))
elif cmd == "create":
    print(create(args[0], args[1], args[2:]))
elif cmd == "execsync":
    sys.exit(execsync(args[0], args[1:]))
elif cmd == "rmc":
    rmc(args[0])
elif cmd == "exec":
    cid = create(args[0], args[1], [])
    try:
        rc = execsync(cid, args[2:])
    finally:
        rmc(cid)
    sys.exit(rc)
elif cmd == "stopp":
    t0 = time.monotonic()
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=args[0]))
    print(json.dumps({"stopp_seconds": round(time.monotonic() - t0, 3)}))
elif cmd == "rmp":
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=args[0]))
elif cmd == "pods":
    for p in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
        print(p.id, p.metadata.namespace, p.metadata.name, pb.PodSandboxState.Name(p.state))
else:
    sys.exit(__doc__)
