"""dimbybot2 CI: a plain-Python core (no Dagger imports) with two thin skins on top.

  core     config, model, tags, cache, render, progress, registry, pipeline, local, report
  skins    main.py (the Dagger module's main object), cli.py (the `dimbybot-ci` command)
"""

__version__ = "0.1.0"
