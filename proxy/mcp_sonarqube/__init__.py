"""`meterline mcp sonarqube`: an MCP server that answers questions about SonarQube projects.

``settings`` reads its environment, ``sonarqube`` is the Web API client, ``fixes`` asks an LLM
through Meterline, ``tools`` turns both into tool results (``models``), ``server`` registers the
tools on the SDK's ``MCPServer`` and ``cli`` starts it on stdio or streamable HTTP.
"""
