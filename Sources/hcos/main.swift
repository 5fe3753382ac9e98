print("hcos")
