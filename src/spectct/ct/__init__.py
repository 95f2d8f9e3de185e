"""CT: fan-beam geometry, projector, polyenergetic simulation, FBP, topogram.

Public entry points: :class:`~spectct.ct.geometry.CtGeometry`,
:class:`~spectct.ct.projector.FanBeamProjector`, :func:`~spectct.ct.fbp.fbp`,
:func:`~spectct.ct.simulate.simulate_ct`, :func:`~spectct.ct.simulate.reconstruct_ct`,
:func:`~spectct.ct.drr.topogram`.
"""
