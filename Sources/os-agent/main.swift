print("os-agent")
