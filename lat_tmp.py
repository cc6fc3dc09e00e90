import time, numpy as np
from fusion import FusionSettings, StreamingFusion
from simulators.specimens import VirtualSpecimen, load_texture, make_height_map
from simulators.optics import render_stack, Optics
shape=(1944,2592)
sp=VirtualSpecimen(load_texture("coffee",shape), make_height_map("dome",shape,20.0))
st=render_stack(sp,[0,5,10,15,20],Optics(blur_px_per_um=0.3))
w=StreamingFusion((64,64,3),np.uint8,FusionSettings(align="off"))
for _ in range(2): w.push(np.ascontiguousarray(st.slices[0][:64,:64]))
w.finish()
for rep in range(2):
    e=StreamingFusion(st.slices[0].shape,np.uint8,FusionSettings(align="off"))
    ts=[]
    for p,z in zip(st.slices,st.z_um):
        t=time.perf_counter(); e.push(p,z); ts.append(time.perf_counter()-t)
    t=time.perf_counter(); r=e.result(); tr=time.perf_counter()-t
    t=time.perf_counter(); f=e.finish(); tf=time.perf_counter()-t
    print("push", [round(x,3) for x in ts], "result", round(tr,3), "finish", round(tf,3))
import cProfile, pstats
e=StreamingFusion(st.slices[0].shape,np.uint8,FusionSettings(align="off"))
e.push(st.slices[0],0.0)
pr=cProfile.Profile(); pr.enable()
for p,z in zip(st.slices[1:],st.z_um[1:]): e.push(p,z)
e.finish()
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(18)
