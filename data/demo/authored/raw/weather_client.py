# Ask a weather web service for today's temperature in a city.
import json
import urllib.request

API = "http://api.example-weather.com/v1/current?city={}&units=metric"


def current_temperature(city):
    with urllib.request.urlopen(API.format(city), timeout=10) as resp:
        data = json.load(resp)
    return data["main"]["temp"], data["weather"][0]["description"]


city = input("City: ")
temp, desc = current_temperature(city)
print(f"{city}: {temp} C, {desc}")
