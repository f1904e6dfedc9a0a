"""IHE XDS.b for the DMP: ebRIM metadata, SOAP 1.2 + MTOM/XOP, the VIHF, the signed submission set.

The modules are layered so that each can be tested alone: :mod:`~crbio.dispatch.xds.metadata`
derives the ebRIM objects from a CR-BIO header (and also writes the IHE_XDM ``METADATA.XML``
the MSSanté senders put in their archives), :mod:`~crbio.dispatch.xds.vihf` and
:mod:`~crbio.dispatch.xds.signature` sign, :mod:`~crbio.dispatch.xds.soap` wraps and unwraps
messages, :mod:`~crbio.dispatch.xds.response` reads what the registry answered, and
:class:`crbio.dispatch.senders.dmp.DmpSender` ties them together over HTTPS.
"""
