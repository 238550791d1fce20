"""The offline (CPU) generators that composite verified real pixels (swap, paste), and the compositing they share.

`composite` warps, colour-matches and blends; `look` reads a cluster's attributes; `edit_sites` crops and blends back.
"""
