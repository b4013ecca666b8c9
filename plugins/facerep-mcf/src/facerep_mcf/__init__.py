"""facerep-mcf: MCF, masked image modelling scored by a frozen teacher + masked-pair contrast
(Wang et al., ACM MM 2023), as a facerep objective plugin (``mcf.mcf``)."""

__all__: list[str] = []
