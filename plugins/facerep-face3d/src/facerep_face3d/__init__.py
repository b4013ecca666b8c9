"""3D face alignment for facerep: 300W-LP and AFLW2000-3D readers, a 68-point 3D head, NME by yaw bin."""
