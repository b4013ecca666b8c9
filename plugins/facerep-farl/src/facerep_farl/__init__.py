"""facerep-farl: FaRL, image-text contrast + masked image modelling on faces (Zheng et al., CVPR
2022), as a facerep objective plugin (``farl.farl``)."""

__all__: list[str] = []
